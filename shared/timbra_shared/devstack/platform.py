"""The whole local platform in one object.

    async with Platform(PlatformConfig.for_tests(tmp_path)) as p:
        p.url("ingress"), p.mongodb_url, p.kafka_bootstrap
        await p.kill_service("stamping"); await p.restart_service("stamping")
        await p.restart_broker()

Start order: mongod -> broker -> topics -> smtp-sink -> sandbox-pac -> the seven
services (in parallel) -> ingress, waiting for each one's ``/healthz``.  When
``MONGODB_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` are given, the embedded server in
question is not started and the external one is used instead.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import importlib.util
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import servers
from .supervisor import RUN_ENV, ManagedProcess, ProcessFailed, Supervisor

log = logging.getLogger("timbra.devstack")

__all__ = ["PROCESSES", "SERVICES", "Platform", "PlatformConfig", "PlatformError", "ProcessSpec", "find_repo_root"]


class PlatformError(ProcessFailed):
    pass


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    module: str
    port: int  # default HTTP port (for the SMTP sink: its web port)
    #: pipeline work that may wait for the CPU: it runs at PlatformConfig.background_nice, so that
    #: on a saturated machine the HTTP edge and the catalog's autocomplete still answer at once
    background: bool = False


#: Every process `make up` launches, in start order (the seven services start together).
PROCESSES: tuple[ProcessSpec, ...] = (
    ProcessSpec("smtp-sink", "timbra_shared.devstack.smtp_sink", 8025, background=True),
    ProcessSpec("sandbox-pac", "timbra_shared.sandbox_pac", 8090, background=True),
    ProcessSpec("issuer-profile", "timbra_issuer_profile.main", 8101, background=True),
    ProcessSpec("catalog", "timbra_catalog.main", 8102),
    ProcessSpec("cfdi-builder", "timbra_cfdi_builder.main", 8103, background=True),
    ProcessSpec("stamping", "timbra_stamping.main", 8104, background=True),
    ProcessSpec("cancellation", "timbra_cancellation.main", 8105, background=True),
    ProcessSpec("billing", "timbra_billing.main", 8106, background=True),
    ProcessSpec("notifier", "timbra_notifier.main", 8107, background=True),
    ProcessSpec("ingress", "timbra_shared.ingress", 8080),
)
SPECS: dict[str, ProcessSpec] = {p.name: p for p in PROCESSES}
#: The seven domain services (the ingress routes to these).
SERVICES: tuple[str, ...] = (
    "issuer-profile", "catalog", "cfdi-builder", "stamping", "cancellation", "billing", "notifier",
)
INFRA = ("mongod", "tansu")

DEFAULT_MONGO_PORT = 27018
DEFAULT_KAFKA_PORT = 19092
DEFAULT_SMTP_PORT = 1025
DEFAULT_PARTITIONS = 6
DEFAULT_BACKGROUND_NICE = 10


def find_repo_root(start: Path | None = None) -> Path | None:
    """The checkout that holds ``shared/timbra_shared`` (cwd first, then this file's location)."""
    candidates = [start or Path.cwd(), Path(__file__).resolve()]
    for base in candidates:
        for d in [base, *base.parents]:
            if (d / "shared" / "timbra_shared").is_dir() and (d / "services").is_dir():
                return d
    return None


def _default_data_dir() -> Path:
    root = find_repo_root()
    return (root / ".data") if root else (Path.home() / ".timbra")


def _env_port(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    return int(value) if value else default


def _env_nice(env: Mapping[str, str]) -> int:
    value = env.get("TIMBRA_BACKGROUND_NICE", "").strip()
    return min(19, max(0, int(value))) if value else DEFAULT_BACKGROUND_NICE


def _port_env_name(process: str) -> str:
    return "TIMBRA_PORT_" + process.upper().replace("-", "_")


def _load_or_create_secret(path: Path, make: Callable[[], str]) -> str:
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)
    return value


@dataclass
class PlatformConfig:
    """Everything that differs between `make up`, tests and external clusters.

    ``env_for()`` is the single place that defines the environment every process gets.
    """

    data_dir: Path = field(default_factory=_default_data_dir)
    host: str = "127.0.0.1"
    mongo_port: int = DEFAULT_MONGO_PORT
    kafka_port: int = DEFAULT_KAFKA_PORT
    smtp_port: int = DEFAULT_SMTP_PORT
    #: HTTP port per process name (smtp-sink: its web port)
    ports: dict[str, int] = field(default_factory=lambda: {p.name: p.port for p in PROCESSES})
    partitions: int = DEFAULT_PARTITIONS
    #: replication factor for topics the platform creates (raise it on a real cluster)
    topic_replication: int = 1
    #: external servers; when set, the embedded one is not started
    mongodb_url: str | None = None
    kafka_bootstrap: str | None = None
    admin_key: str | None = None
    master_key: str | None = None
    internal_secret: str | None = None
    #: processes to launch, in PROCESSES order; None = all of them
    processes: list[str] | None = None
    #: topic name -> partitions; None = timbra_shared.topics.ALL_TOPICS (computed with TIMBRA_PARTITIONS)
    topics: dict[str, int] | None = None
    #: skip processes whose module is not importable instead of failing
    skip_missing: bool = False
    #: restart processes that die on their own (used by `timbra up`)
    autorestart: bool = False
    health_timeout: float = 90.0
    stop_grace: float = 10.0
    extra_env: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable
    #: service -> instances to run (default 1); the extra ones are named ``<service>#2``, … and
    #: join the same consumer groups (docs/scaling.md)
    instances: dict[str, int] = field(default_factory=dict)
    #: CPU priority of the background processes (ProcessSpec.background); 0 = all equal.
    #: TIMBRA_BACKGROUND_NICE overrides it (docs/devstack.md, "CPU priority")
    background_nice: int = field(default_factory=lambda: _env_nice(os.environ))

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "PlatformConfig":
        """Defaults, overridden by environment variables, overridden by ``overrides``."""
        env = os.environ if env is None else env
        kw: dict = {}
        if env.get("TIMBRA_DATA_DIR"):
            kw["data_dir"] = Path(env["TIMBRA_DATA_DIR"])
        kw["mongo_port"] = _env_port(env, "TIMBRA_MONGO_PORT", DEFAULT_MONGO_PORT)
        kw["kafka_port"] = _env_port(env, "TIMBRA_KAFKA_PORT", DEFAULT_KAFKA_PORT)
        kw["smtp_port"] = _env_port(env, "TIMBRA_SMTP_PORT", DEFAULT_SMTP_PORT)
        ports = {p.name: _env_port(env, _port_env_name(p.name), p.port) for p in PROCESSES}
        if env.get("TIMBRA_SMTP_WEB_PORT"):
            ports["smtp-sink"] = int(env["TIMBRA_SMTP_WEB_PORT"])
        kw["ports"] = ports
        if env.get("TIMBRA_PARTITIONS"):
            kw["partitions"] = int(env["TIMBRA_PARTITIONS"])
        if env.get("TIMBRA_TOPIC_REPLICATION"):
            kw["topic_replication"] = int(env["TIMBRA_TOPIC_REPLICATION"])
        kw["mongodb_url"] = env.get("MONGODB_URL") or None
        kw["kafka_bootstrap"] = env.get("KAFKA_BOOTSTRAP_SERVERS") or None
        kw["admin_key"] = env.get("TIMBRA_ADMIN_KEY") or None
        kw["master_key"] = env.get("TIMBRA_MASTER_KEY") or None
        kw["internal_secret"] = env.get("TIMBRA_INTERNAL_SECRET") or None
        kw["background_nice"] = _env_nice(env)
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def for_tests(cls, data_dir: str | os.PathLike, **overrides) -> "PlatformConfig":
        """Temp data dir, free ports everywhere, embedded servers, throwaway secrets.

        Ignores MONGODB_URL/KAFKA_BOOTSTRAP_SERVERS unless passed explicitly.
        """
        kw: dict = dict(
            data_dir=Path(data_dir),
            mongo_port=servers.free_port(),
            kafka_port=servers.free_port(),
            smtp_port=servers.free_port(),
            ports={p.name: servers.free_port() for p in PROCESSES},
            partitions=int(os.environ.get("TIMBRA_PARTITIONS") or 3),
            admin_key="ta_test_" + secrets.token_urlsafe(24),
            master_key=base64.b64encode(os.urandom(32)).decode(),
            internal_secret=secrets.token_urlsafe(32),
            health_timeout=120.0,
            stop_grace=8.0,
        )
        kw.update(overrides)
        return cls(**kw)

    # -- derived ------------------------------------------------------------------------
    @property
    def embedded_mongo(self) -> bool:
        return not self.mongodb_url

    @property
    def embedded_kafka(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def effective_mongodb_url(self) -> str:
        return self.mongodb_url or servers.mongo_url(self.mongo_port, self.host)

    @property
    def effective_kafka_bootstrap(self) -> str:
        return self.kafka_bootstrap or f"{self.host}:{self.kafka_port}"

    @property
    def mongo_dir(self) -> Path:
        return self.data_dir / "mongo"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def trace_dir(self) -> Path:
        return self.data_dir / "traces"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "up.pid"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "pids.json"

    def selected(self) -> list[ProcessSpec]:
        if self.processes is None:
            return list(PROCESSES)
        unknown = set(self.processes) - set(SPECS)
        if unknown:
            raise PlatformError(f"unknown process(es) {sorted(unknown)}; known: {', '.join(SPECS)}")
        return [p for p in PROCESSES if p.name in self.processes]

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.ports[name]}"

    def instance_names(self, service: str) -> list[str]:
        """``service`` and its extra instances (``service#2`` …), as configured."""
        return [service] + [instance_name(service, n) for n in range(2, self.instances.get(service, 1) + 1)]

    def health_url(self, name: str) -> str:
        return self.url(name) + "/healthz"

    def resolve_secrets(self) -> None:
        """Env/explicit values win; else read from, or generate once into, the data dir (0600)."""
        if not self.admin_key:
            self.admin_key = _load_or_create_secret(
                self.data_dir / "admin_key", lambda: "ta_" + secrets.token_urlsafe(32))
        if not self.master_key:
            self.master_key = _load_or_create_secret(
                self.data_dir / "master_key", lambda: base64.b64encode(secrets.token_bytes(32)).decode())
        if not self.internal_secret:
            self.internal_secret = _load_or_create_secret(
                self.data_dir / "internal_secret", lambda: secrets.token_urlsafe(32))

    def common_env(self) -> dict[str, str]:
        """The environment every process gets (see docs/devstack.md)."""
        self.resolve_secrets()
        return {
            "MONGODB_URL": self.effective_mongodb_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.effective_kafka_bootstrap,
            "TIMBRA_DATA_DIR": str(self.data_dir),
            "TIMBRA_ADMIN_KEY": self.admin_key or "",
            "TIMBRA_MASTER_KEY": self.master_key or "",
            "TIMBRA_INTERNAL_SECRET": self.internal_secret or "",
            "TIMBRA_PAC_URL": self.url("sandbox-pac"),
            "TIMBRA_SMTP_HOST": self.host,
            "TIMBRA_SMTP_PORT": str(self.smtp_port),
            "TIMBRA_SMTP_WEB_PORT": str(self.ports["smtp-sink"]),
            "TIMBRA_SMTP_SINK_URL": self.url("smtp-sink"),
            "TIMBRA_PUBLIC_URL": self.url("ingress"),
            "TIMBRA_TRACE_DIR": str(self.trace_dir),
            "TIMBRA_SERVICE_URLS": json.dumps({name: self.url(name) for name in SERVICES}),
            "TIMBRA_PARTITIONS": str(self.partitions),
            **self.extra_env,
        }

    def env_for(self, name: str) -> dict[str, str]:
        """The full TIMBRA_* environment of process ``name`` (or of an instance ``name#n``)."""
        base = base_name(name)
        if base not in SPECS:
            raise PlatformError(f"unknown process {name!r}")
        env = self.common_env()
        env["TIMBRA_SERVICE_NAME"] = base
        env["TIMBRA_HTTP_PORT"] = str(self.ports[name])
        return env

    def argv_for(self, name: str) -> list[str]:
        return [self.python, "-m", SPECS[base_name(name)].module]


def instance_name(service: str, n: int) -> str:
    """The name of the ``n``-th instance of a service (the first is the service's own name)."""
    return service if n == 1 else f"{service}#{n}"


def base_name(name: str) -> str:
    """``stamping#2`` -> ``stamping``."""
    return name.split("#", 1)[0]


def load_topics(config: PlatformConfig) -> dict[str, int]:
    """``timbra_shared.topics.ALL_TOPICS`` as the services will see it.

    Evaluated in a child interpreter with the same ``TIMBRA_PARTITIONS`` the services
    get, so the partition counts match whatever the module derives from it.
    """
    if config.topics is not None:
        return dict(config.topics)
    code = "import json; from timbra_shared.topics import ALL_TOPICS; print(json.dumps(dict(ALL_TOPICS)))"
    env = dict(os.environ, TIMBRA_PARTITIONS=str(config.partitions))
    proc = subprocess.run([config.python, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise PlatformError(f"could not load timbra_shared.topics.ALL_TOPICS:\n{proc.stderr.strip()[-2000:]}")
    return {str(k): int(v) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


class Platform:
    """Runs the local platform. Use ``async with Platform(cfg) as p`` or ``start()``/``stop()``."""

    def __init__(self, config: PlatformConfig | None = None, *, echo: Callable[[str], None] | None = None) -> None:
        self.config = config or PlatformConfig.from_env()
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.supervisor = Supervisor(self.config.log_dir, grace=self.config.stop_grace, state_file=self.config.state_file)
        self.topics: dict[str, int] = {}
        self._echo = echo or (lambda msg: log.info("%s", msg))
        self._started = False
        self._monitor: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    # -- conveniences -------------------------------------------------------------------
    @property
    def mongodb_url(self) -> str:
        return self.config.effective_mongodb_url

    @property
    def kafka_bootstrap(self) -> str:
        return self.config.effective_kafka_bootstrap

    @property
    def admin_key(self) -> str:
        self.config.resolve_secrets()
        return self.config.admin_key  # type: ignore[return-value]

    def url(self, name: str) -> str:
        return self.config.url(name)

    def env_for(self, name: str) -> dict[str, str]:
        return self.config.env_for(name)

    def process(self, name: str) -> ManagedProcess:
        return self.supervisor[name]

    def pid(self, name: str) -> int | None:
        mp = self.supervisor.get(name)
        return mp.pid if mp and mp.running else None

    def urls(self) -> dict[str, str]:
        c = self.config
        api = c.url("ingress")
        return {
            "public API": api,
            "OpenAPI": f"{api}/openapi.json",
            "issuer panel": f"{api}/panel",
            "self-invoicing portal": f"{api}/portal/{{issuer_slug}}",
            "operator & billing console": f"{api}/console",
            "SMTP sink (web/JSON)": c.url("smtp-sink"),
            "SMTP sink (SMTP)": f"smtp://{c.host}:{c.smtp_port}",
            "sandbox PAC": c.url("sandbox-pac"),
            "MongoDB": self.mongodb_url,
            "Kafka bootstrap": self.kafka_bootstrap,
            "data folder": str(c.data_dir),
            "logs": str(c.log_dir),
        }

    # -- lifecycle ----------------------------------------------------------------------
    async def __aenter__(self) -> "Platform":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> "Platform":
        if self._started:
            return self
        self._started = True
        c = self.config
        c.data_dir.mkdir(parents=True, exist_ok=True)
        c.trace_dir.mkdir(parents=True, exist_ok=True)
        c.resolve_secrets()
        try:
            specs = self._check_modules(c.selected())
            self._check_ports(specs)
            if c.embedded_mongo:
                await self.start_mongo()
            else:
                self._echo(f"using external MongoDB {c.mongodb_url}")
            if c.embedded_kafka:
                await self._start_broker_process()
            else:
                self._echo(f"using external Kafka {c.kafka_bootstrap}")
            self.topics = await asyncio.to_thread(load_topics, c)
            await self._create_topics()
            waves = [
                [s for s in specs if s.name == "smtp-sink"],
                [s for s in specs if s.name == "sandbox-pac"],
                [s for s in specs if s.name in SERVICES],
                [s for s in specs if s.name == "ingress"],
            ]
            for wave in waves:
                if wave:
                    await self._start_wave(wave)
            if c.autorestart:
                self._monitor = asyncio.create_task(self._watch(), name="devstack-monitor")
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Stop everything (services first, then broker and mongod). Idempotent."""
        if self._monitor is not None:
            self._monitor.cancel()
            try:
                await self._monitor
            except BaseException:
                pass
            self._monitor = None
        await self.supervisor.astop_all()
        self._started = False

    def stop_sync(self) -> None:
        """For atexit / signal handlers: stop every child without an event loop."""
        self.supervisor.stop_all()

    # -- processes ----------------------------------------------------------------------
    def _check_modules(self, specs: list[ProcessSpec]) -> list[ProcessSpec]:
        ok = []
        for spec in specs:
            try:
                found = importlib.util.find_spec(spec.module) is not None
            except ModuleNotFoundError:
                found = False
            if found:
                ok.append(spec)
            elif self.config.skip_missing:
                self._echo(f"skipping {spec.name}: module {spec.module} is not installed")
            else:
                raise PlatformError(
                    f"{spec.name}: module {spec.module} is not importable with {self.config.python} "
                    "(run `make install`, or start with --skip-missing / --only)")
        return ok

    def _check_ports(self, specs: Iterable[ProcessSpec]) -> None:
        c = self.config
        wanted = [(s.name, c.ports[s.name]) for s in specs]
        if any(s.name == "smtp-sink" for s in specs):
            wanted.append(("smtp-sink (SMTP)", c.smtp_port))
        if c.embedded_mongo:
            wanted.append(("mongod", c.mongo_port))
        if c.embedded_kafka:
            wanted.append(("tansu", c.kafka_port))
        seen: dict[int, str] = {}
        for name, port in wanted:
            if port in seen:
                raise PlatformError(f"port {port} is configured for both {seen[port]} and {name}")
            seen[port] = name
        busy = [f"{name} :{port}" for name, port in wanted if servers.port_in_use(port, c.host)]
        if busy:
            raise PlatformError(
                "ports already in use: " + ", ".join(busy)
                + " (is `make up` already running? stop it with `make down`, or choose other ports)")

    def _start_process(self, spec: ProcessSpec, name: str | None = None) -> ManagedProcess:
        name = name or spec.name
        if name not in self.config.ports:  # an extra instance: any free port
            self.config.ports[name] = servers.free_port(self.config.host)
        return self.supervisor.start(
            name, self.config.argv_for(name), self.env_for(name),
            health_url=self.config.health_url(name), port=self.config.ports[name],
            nice=self.config.background_nice if spec.background else 0,
        )

    async def _start_wave(self, wave: list[ProcessSpec]) -> None:
        t0 = time.monotonic()
        names = [name for spec in wave for name in self.config.instance_names(spec.name)]
        for name in names:
            self._start_process(SPECS[base_name(name)], name)
        await asyncio.gather(*(self.supervisor.wait_healthy(name, self.config.health_timeout) for name in names))
        self._echo(f"{', '.join(names)} healthy ({time.monotonic() - t0:.1f}s)")

    def instances(self, service: str) -> list[str]:
        """The names of the running-or-started instances of ``service`` (``stamping``, ``stamping#2`` …)."""
        return [n for n in self.supervisor.names if base_name(n) == service]

    async def start_instance(self, service: str) -> str:
        """Start one more instance of a domain service (same consumer groups, its own HTTP port)
        and wait for its /healthz; returns its name (``stamping#2``)."""
        if service not in SERVICES:
            raise PlatformError(f"only the domain services scale out, not {service!r}")
        taken = set(self.instances(service))
        n = next(n for n in range(2, 1000) if instance_name(service, n) not in taken)
        name = instance_name(service, n)
        self.config.instances[service] = max(self.config.instances.get(service, 1), n)
        self._start_process(SPECS[service], name)  # from this (main) thread: parent-death signal
        await self.supervisor.wait_healthy(name, self.config.health_timeout)
        return name

    def _require(self, name: str) -> ProcessSpec:
        if base_name(name) not in SPECS:
            raise PlatformError(f"unknown process {name!r}")
        if name not in self.supervisor:
            raise PlatformError(f"{name} was not started by this platform")
        return SPECS[base_name(name)]

    async def kill_service(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL) to a process's group; SIGKILL waits until it is gone."""
        self._require(name)
        self.supervisor[name].stopping = True  # the monitor must not revive it
        await asyncio.to_thread(self.supervisor.kill, name, sig)

    async def stop_service(self, name: str) -> None:
        self._require(name)
        await asyncio.to_thread(self.supervisor.stop, name)

    async def restart_service(self, name: str, *, timeout: float | None = None) -> None:
        """Stop (if running) and start ``name`` again, then wait for its /healthz."""
        self._require(name)
        await asyncio.to_thread(self.supervisor[name].stop, self.config.stop_grace)
        # relaunch in this (main) thread so the child gets its parent-death signal
        self.supervisor.restart(name)
        await self.supervisor.wait_healthy(name, timeout or self.config.health_timeout)

    # -- MongoDB ------------------------------------------------------------------------
    async def start_mongo(self) -> None:
        c = self.config
        if not c.embedded_mongo:
            raise PlatformError("MongoDB is external (MONGODB_URL); the platform does not manage it")
        old = self.supervisor.get("mongod")
        if old is not None and old.running:
            return
        t0 = time.monotonic()
        mp = await servers.start_mongo(
            c.mongo_dir, c.mongo_port, log_path=c.log_dir / "mongod.log",
            env={RUN_ENV: self.supervisor.run_id})
        self.supervisor.adopt(mp)
        self._echo(f"mongod ready on {c.host}:{c.mongo_port} ({time.monotonic() - t0:.1f}s)")

    async def stop_mongo(self, sig: int = signal.SIGTERM) -> None:
        """Stop mongod: SIGTERM is a clean shutdown, SIGKILL a crash (journal recovery on start)."""
        if "mongod" not in self.supervisor:
            raise PlatformError("mongod is not managed by this platform")
        mp = self.supervisor["mongod"]
        mp.stopping = True
        if sig == signal.SIGTERM:
            await asyncio.to_thread(mp.stop, 60.0)
        else:
            await asyncio.to_thread(mp.kill, sig)

    # -- broker -------------------------------------------------------------------------
    async def _start_broker_process(self) -> None:
        c = self.config
        t0 = time.monotonic()
        # spawned from the event-loop thread (parent-death signal), waited for in a worker
        mp = servers.spawn_broker(c.kafka_port, log_path=c.log_dir / "tansu.log", env={RUN_ENV: self.supervisor.run_id})
        self.supervisor.adopt(mp)
        await asyncio.to_thread(servers.wait_broker, c.kafka_port, 30.0, mp)
        self._echo(f"tansu ready on {c.host}:{c.kafka_port} ({time.monotonic() - t0:.1f}s)")

    async def _create_topics(self) -> None:
        t0 = time.monotonic()
        await servers.create_topics(self.kafka_bootstrap, self.topics, replication_factor=self.config.topic_replication)
        self._echo(f"{len(self.topics)} topics ready ({time.monotonic() - t0:.1f}s)")

    async def stop_broker(self, sig: int = signal.SIGTERM) -> None:
        if "tansu" not in self.supervisor:
            raise PlatformError("the broker is external or not started; the platform does not manage it")
        mp = self.supervisor["tansu"]
        mp.stopping = True
        if sig == signal.SIGTERM:
            await asyncio.to_thread(mp.stop, 10.0)
        else:
            await asyncio.to_thread(mp.kill, sig)

    async def start_broker(self) -> None:
        """Start tansu (empty: memory storage) and recreate the topics."""
        if not self.config.embedded_kafka:
            raise PlatformError("Kafka is external (KAFKA_BOOTSTRAP_SERVERS); the platform does not manage it")
        old = self.supervisor.get("tansu")
        if old is None or not old.running:
            await self._start_broker_process()
        if not self.topics:
            self.topics = await asyncio.to_thread(load_topics, self.config)
        await self._create_topics()

    async def restart_broker(self, sig: int = signal.SIGTERM) -> None:
        """Stop tansu, start it again empty on the same port, recreate the topics."""
        async with self._lock:
            await self.stop_broker(sig)
            await self.start_broker()

    # -- watchdog (timbra up) -----------------------------------------------------------
    async def _watch(self) -> None:
        backoff: dict[str, float] = {}
        while True:
            await asyncio.sleep(2.0)
            for mp in self.supervisor.exited():
                name = mp.name
                wait = backoff.get(name, 1.0)
                self._echo(f"{name} exited with code {mp.returncode}; restarting in {wait:.0f}s "
                           f"(log: {mp.log_path})")
                await asyncio.sleep(wait)
                backoff[name] = min(wait * 2, 60.0)
                try:
                    async with self._lock:
                        if mp.running or mp.stopping:
                            continue
                        if name == "mongod":
                            await self.start_mongo()
                        elif name == "tansu":  # comes back empty; topics are recreated
                            await self.start_broker()
                        else:
                            self.supervisor.restart(name)
                            await self.supervisor.wait_healthy(name, self.config.health_timeout)
                    self._echo(f"{name} is back")
                    backoff[name] = 1.0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # keep watching; try again later
                    self._echo(f"restarting {name} failed: {exc}")


def replace(config: PlatformConfig, **changes) -> PlatformConfig:
    return dataclasses.replace(config, **changes)
