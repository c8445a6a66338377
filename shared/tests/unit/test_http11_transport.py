"""``Http11Transport`` against a scripted HTTP server on loopback (real sockets): keep-alive,
chunked answers, a server that closes, one that never answers, one that hangs up."""

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from timbra_shared.pac.http import Http11Transport
from timbra_shared.pac.sw_envelope import transport_error


class ScriptedServer:
    """Answers each request with the next action of ``script``; records requests and connections."""

    def __init__(self) -> None:
        self.script: list[tuple] = []
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *lines = head.decode().split("\r\n")
                headers = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines if x)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                self.requests.append((line, headers, body))
                action, *args = self.script.pop(0)
                if action == "respond":
                    status, extra, content = args
                    writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(content)}\r\n{extra}\r\n".encode() + content)
                elif action == "chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in args[0]) + b"0\r\n\r\n")
                elif action == "silent":
                    await asyncio.sleep(30)
                elif action == "hangup":
                    writer.close()
                    return
                elif action == "partial":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part")
                    await writer.drain()
                    writer.close()
                    return
                await writer.drain()
                if "Connection: close" in (args[1] if action == "respond" else ""):
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return


@pytest.fixture
async def server() -> AsyncIterator[tuple[ScriptedServer, str]]:
    scripted = ScriptedServer()
    srv = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    yield scripted, f"http://127.0.0.1:{port}"
    srv.close()
    for w in scripted.writers:
        w.close()


def client(base_url: str, timeout: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(timeout), headers={"Authorization": "Bearer t"}, transport=Http11Transport())


async def test_keep_alive_request_shape_and_answer(server):
    scripted, url = server
    scripted.script = [("respond", 200, "Content-Type: application/json\r\n", b'{"status": "success"}'), ("respond", 404, "", b"")]
    async with client(url) as c:
        first = await c.post("/cfdi33/stamp/v4?x=1", files={"xml": ("cfdi.xml", b"<cfdi/>", "text/xml")}, headers={"customid": "inv_1"})
        second = await c.get("/cfdi33/stamp/status", params={"customid": "inv_1"})
    assert (first.status_code, first.json(), first.headers["content-type"]) == (200, {"status": "success"}, "application/json")
    assert second.status_code == 404
    assert scripted.connections == 1  # the connection was kept
    (line, headers, body), (line2, _, _) = scripted.requests
    assert line == "POST /cfdi33/stamp/v4?x=1 HTTP/1.1" and line2 == "GET /cfdi33/stamp/status?customid=inv_1 HTTP/1.1"
    assert headers["authorization"] == "Bearer t" and headers["customid"] == "inv_1" and headers["host"] == url.removeprefix("http://")
    assert headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="xml"; filename="cfdi.xml"' in body and b"<cfdi/>" in body


async def test_a_chunked_answer_is_joined(server):
    scripted, url = server
    scripted.script = [("chunked", [b'{"a": ', b'"b"}'])]
    async with client(url) as c:
        assert (await c.get("/")).json() == {"a": "b"}


async def test_a_connection_the_server_closes_is_not_reused(server):
    scripted, url = server
    scripted.script = [("respond", 200, "Connection: close\r\n", b"1"), ("respond", 200, "", b"2")]
    async with client(url) as c:
        assert (await c.get("/")).content == b"1"
        assert (await c.get("/")).content == b"2"
    assert scripted.connections == 2


async def test_an_idle_connection_closed_by_the_server_is_replaced(server):
    scripted, url = server
    scripted.script = [("respond", 200, "", b"1"), ("respond", 200, "", b"2")]
    async with client(url) as c:
        assert (await c.get("/")).content == b"1"
        scripted.writers[0].close()  # the server's keep-alive timeout
        await asyncio.sleep(0.1)
        assert (await c.get("/")).content == b"2"
    assert scripted.connections == 2


async def test_no_answer_in_time_is_a_read_timeout_that_may_have_stamped(server):
    scripted, url = server
    scripted.script = [("silent",), ("respond", 200, "", b"late")]
    async with client(url, timeout=0.3) as c:
        with pytest.raises(httpx.ReadTimeout) as err:
            await c.post("/", content=b"x")
        assert transport_error(err.value).maybe_stamped is True
        assert (await c.get("/")).content == b"late"  # on a new connection: the old one may still answer
    assert scripted.connections == 2


async def test_a_refused_connection_did_not_reach_the_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it once closed
    async with client(f"http://127.0.0.1:{port}") as c:
        with pytest.raises(httpx.ConnectError) as err:
            await c.get("/")
    assert transport_error(err.value).maybe_stamped is False


@pytest.mark.parametrize("action", ["hangup", "partial"])
async def test_a_server_that_hangs_up_may_have_stamped(server, action):
    scripted, url = server
    scripted.script = [(action,), ("respond", 200, "", b"ok")]
    async with client(url) as c:
        with pytest.raises(httpx.RemoteProtocolError) as err:
            await c.post("/", content=b"x")
        assert transport_error(err.value).maybe_stamped is True
        assert (await c.get("/")).content == b"ok"


async def test_https_is_refused_not_sent_in_clear():
    async with client("https://127.0.0.1:1") as c:
        with pytest.raises(httpx.UnsupportedProtocol):
            await c.get("/")
