"""What every service's ``main.py`` wires together: settings, logging, telemetry, MongoDB, the
broker, the outbox relay, the redrive subscriber, background tasks and the HTTP app."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI
from faststream.kafka import KafkaRouter
from prometheus_client import CollectorRegistry

from timbra_shared import topics
from timbra_shared.events import RedriveInvoice
from timbra_shared.http import EVENT_LOOP, create_app
from timbra_shared.logging import configure_logging, get_logger
from timbra_shared.messaging import FetchWaitTuner, PastEndWatch, make_broker, subscriber
from timbra_shared.mongo import Store, make_client
from timbra_shared.outbox import Outbox
from timbra_shared.settings import Settings
from timbra_shared.telemetry import setup_telemetry, shutdown_telemetry

log = get_logger(__name__)

StartupHook = Callable[[], Awaitable[None]]
BackgroundTask = Callable[[], Awaitable[None]]


class Runtime:
    def __init__(self, service: str, settings: Settings | None = None) -> None:
        self.service = service
        self.settings = settings or Settings(TIMBRA_SERVICE_NAME=service)
        configure_logging(service, self.settings.log_level)
        self.tracer_provider = setup_telemetry(service, self.settings.trace_dir, self.settings.otlp_endpoint)
        self.registry = CollectorRegistry()
        self.client = make_client(self.settings.mongodb_url)
        self.broker, self.dead_letters = make_broker(
            self.settings.kafka_bootstrap_servers,
            service=service,
            tracer_provider=self.tracer_provider,
            registry=self.registry,
        )
        self.outbox = Outbox(None, self._publish, poll_interval=self.settings.outbox_poll_s)
        self.store = Store(self.client, self.settings.database_name, self.outbox)
        self.outbox.bind(self.store.db.outbox)
        self._startup: list[StartupHook] = [self.store.ensure_indexes]
        self._background: list[BackgroundTask] = [
            PastEndWatch(self.broker).run_forever,
            FetchWaitTuner(self.broker, dead_letters=self.dead_letters).run_forever,
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._add_redrive()

    async def _publish(self, topic: str, payload: bytes, key: bytes, headers: dict[str, str]) -> None:
        await self.broker.publish(payload, topic, key=key, headers=headers)

    def _add_redrive(self) -> None:
        router = KafkaRouter()

        @subscriber(router, topics.INVOICE_REDRIVE, group=f"{self.service}.redrive")
        async def on_redrive(command: RedriveInvoice) -> None:
            count = await self.outbox.requeue(command.invoice_id, topics.redrive_topics(command.stuck_status))
            if count:
                log.info("outbox.redriven", invoice_id=command.invoice_id, events=count, stuck_status=command.stuck_status)

        self.broker.include_router(router)

    def include(self, router: KafkaRouter) -> None:
        self.broker.include_router(router)

    def on_startup(self, hook: StartupHook) -> None:
        self._startup.append(hook)

    def background(self, task: BackgroundTask) -> None:
        self._background.append(task)

    async def _run_startup(self) -> None:
        delay = 0.5
        while True:
            try:
                for hook in self._startup:
                    await hook()
                return
            except Exception as exc:  # mongod may still be coming up
                log.warning("startup.retry", error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        await self._run_startup()
        await self.broker.start()
        await self.outbox.start()
        self._tasks = [asyncio.create_task(self._supervise(task)) for task in self._background]
        app.state.ready = True
        log.info("service.started", port=self.settings.http_port)
        try:
            yield
        finally:
            app.state.ready = False
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.outbox.stop()
            await self.broker.stop()
            await self.client.close()
            shutdown_telemetry()
            log.info("service.stopped")

    async def _supervise(self, task: BackgroundTask) -> None:
        while True:
            try:
                await task()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("background.crashed", task=getattr(task, "__name__", "?"), error=repr(exc))
                await asyncio.sleep(1)

    async def health(self) -> dict[str, Any]:
        try:
            await asyncio.wait_for(self.client.admin.command("ping"), timeout=2)
            mongo = True
        except Exception:
            mongo = False
        return {"mongo": mongo}

    def app(self, routers: Sequence[APIRouter] = (), **fastapi_options: Any) -> FastAPI:
        return create_app(
            service=self.service,
            routers=routers,
            registry=self.registry,
            internal_secret=self.settings.internal_secret,
            lifespan=self.lifespan,
            health=self.health,
            **fastapi_options,
        )

    def serve(self, app: FastAPI) -> None:
        # Keep-alive longer than clients keep idle connections (httpx: 5 s), so a reused connection
        # is never closed under a request in flight.
        config = uvicorn.Config(app, host=self.settings.http_host, port=self.settings.http_port, log_level="warning", access_log=False, lifespan="on",
                                timeout_keep_alive=30, loop=EVENT_LOOP)
        server = uvicorn.Server(config)
        with contextlib.suppress(KeyboardInterrupt):
            server.run()

