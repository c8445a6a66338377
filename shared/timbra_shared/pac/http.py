"""HTTP clients for talking to a PAC at volume."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httptools
import httpx


class ClientPool:
    """httpx clients of one keep-alive connection each, handed out most recently used first.

    httpcore's pool walks every connection (and polls each one's socket) whenever a request is
    assigned or finishes, so a single client serving 32 concurrent stamps spent about 18 % of the
    stamping service's CPU choosing a connection (py-spy during bench/bench_stamping.py). One
    connection per client keeps that walk at one; ``size`` bounds the connections as
    ``max_connections`` did."""

    def __init__(self, factory: Callable[[], httpx.AsyncClient], size: int) -> None:
        self._factory = factory
        self._idle: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []
        self._slots = asyncio.Semaphore(max(1, size))

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        async with self._slots:
            if self._idle:
                client = self._idle.pop()
            else:
                client = self._factory()
                self._all.append(client)
            try:
                yield client
            finally:
                self._idle.append(client)

    async def aclose(self) -> None:
        clients, self._all, self._idle = self._all, [], []
        for client in clients:
            await client.aclose()


class _Http11Protocol(asyncio.Protocol):
    """One HTTP/1.1 connection: writes a request, parses the response with httptools."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._keep_alive = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"respuesta HTTP inválida: {exc}"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(httpx.RemoteProtocolError("Server disconnected without sending a response."))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()  # llhttp forgets it once the message is complete

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    async def exchange(self, request: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        assert self.transport is not None
        self._headers, self._body, self._keep_alive = [], [], False
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            await self._waiter
        finally:
            self._waiter = None
        status = self._parser.get_status_code()
        if not self._keep_alive:
            self.close()
        return status, self._headers, b"".join(self._body)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Http11Transport(httpx.AsyncBaseTransport):
    """An httpx transport of one keep-alive HTTP/1.1 connection, parsed by httptools (C).

    For the clients of a :class:`ClientPool`, which need no pool of their own: after the pool,
    httpcore's connection (h11's pure-Python parser, its state machine, anyio's streams) was about
    half of what a stamp request cost the stamping service (py-spy during bench_stamping.py).
    Plain ``http://`` only; the real PACs' adapters keep httpx's own transport (TLS, HTTP/2).
    Timeouts: ``connect`` for the connection, ``read`` for the whole answer once the request is
    written. A connection that timed out or failed is closed, never reused."""

    def __init__(self) -> None:
        self._connection: _Http11Protocol | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"Http11Transport habla http://, no {request.url.scheme}://")
        timeout = request.extensions.get("timeout", {})
        connection = self._connection
        if connection is None or connection.closed:
            connection = self._connection = await self._connect(request.url.host, request.url.port or 80, timeout.get("connect"))
        body = await request.aread()
        head = [request.method.encode(), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            head += [name, b": ", value, b"\r\n"]
        try:
            async with asyncio.timeout(timeout.get("read")):
                status, headers, content = await connection.exchange(b"".join([*head, b"\r\n", body]))
        except TimeoutError:
            connection.close()
            raise httpx.ReadTimeout("el servidor no respondió a tiempo", request=request) from None
        except BaseException:
            connection.close()
            raise
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(content), request=request)

    @staticmethod
    async def _connect(host: str, port: int, timeout: float | None) -> _Http11Protocol:
        try:
            async with asyncio.timeout(timeout):
                _, protocol = await asyncio.get_running_loop().create_connection(_Http11Protocol, host, port)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no se pudo conectar con {host}:{port} a tiempo") from None
        except OSError as exc:
            raise httpx.ConnectError(f"no se pudo conectar con {host}:{port}: {exc}") from exc
        return protocol

    async def aclose(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
