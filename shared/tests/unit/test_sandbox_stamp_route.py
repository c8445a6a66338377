"""The sandbox's stamp endpoint answers the same through ``StampRoute`` (ahead of FastAPI's
routing) as through FastAPI's own route, for good requests and odd ones."""

import httpx
import pytest

from timbra_shared.cfdi import build, load_csd, seal
from timbra_shared.cfdi.fecha import fecha_local
from timbra_shared.cfdi.testing import make_csd, sample_invoice
from timbra_shared.sandbox_pac.app import StampRoute, create_app


def sandbox(folder, *, fast_route: bool) -> httpx.AsyncClient:
    app = create_app(str(folder), token="tok", validate_xsd=False)
    if not fast_route:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not StampRoute]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox")


@pytest.fixture(scope="module")
def sealed() -> bytes:
    cer, key = make_csd()
    return seal(build(sample_invoice(Fecha=fecha_local("42501"), Folio="1")), load_csd(cer, key, "12345678a"))


def requests(sealed: bytes) -> list[dict]:
    auth = {"Authorization": "Bearer tok"}
    return [
        {"files": {"xml": ("cfdi.xml", sealed, "text/xml")}, "headers": {**auth, "customid": "inv_1"}},  # stamped
        {"files": {"xml": ("cfdi.xml", sealed, "text/xml")}, "headers": auth},  # 307 with the earlier stamp
        {"files": {"xml": ("cfdi.xml", b"<nope/>", "text/xml")}, "headers": auth},  # rejected
        {"files": {"xml": ("cfdi.xml", sealed, "text/xml")}, "headers": {"Authorization": "Bearer wrong"}},  # 401
        {"files": {"other": ("cfdi.xml", sealed, "text/xml")}, "headers": auth},  # no xml part: 422
        {"json": {"xml": "x"}, "headers": auth},  # not multipart: 422
        {"content": b"--b\r\nbroken", "headers": {**auth, "Content-Type": "multipart/form-data; boundary=b"}},  # malformed
    ]


def comparable(response: httpx.Response) -> tuple:
    body = response.json()
    if isinstance(body, dict) and isinstance(body.get("data"), dict):  # UUIDs and dates differ between the two sandboxes
        body["data"] = sorted(body["data"])
    return response.status_code, body


@pytest.mark.parametrize("path", ["/cfdi33/stamp/v4", "/v4/cfdi33/stamp/v4"])
async def test_same_answers_as_fastapis_own_route(tmp_path, sealed, path):
    async with sandbox(tmp_path / "fast", fast_route=True) as fast, sandbox(tmp_path / "plain", fast_route=False) as plain:
        for request in requests(sealed):
            got, want = await fast.post(path, **request), await plain.post(path, **request)
            assert comparable(got) == comparable(want), request
        assert (await fast.get("/healthz")).json()["stamps"] == 1


async def test_other_routes_still_reach_fastapi(tmp_path):
    async with sandbox(tmp_path, fast_route=True) as fast:
        assert (await fast.get("/healthz")).status_code == 200
        assert (await fast.get("/cfdi33/stamp/v4")).status_code == 405
