"""The portal pages' pure parts: API problems placed by field, the receipts and captcha cookies
(sealed, bound to their purpose), the visitor's address passed on with its proof."""

from types import SimpleNamespace

import httpx
from starlette.requests import Request
from starlette.responses import Response

from timbra_shared.auth import CLIENT_IP_HEADER, CLIENT_PROOF_HEADER, client_proof
from timbra_shared.web.core import ApiFailure, Sealer, Web
from timbra_shared.web.portal.common import CAPTCHA_COOKIE, RECEIPTS_COOKIE, captcha_of, keep_captcha, keep_receipt, portal_api, problems_by_field, receipt_of

SECRET = "unit-secret"


def request(cookies: dict[str, str] | None = None, client: str = "203.0.113.5") -> Request:
    web = Web(area="portal", prefix="/portal", cookie="timbra_portal", sealer=Sealer(SECRET), http=httpx.AsyncClient())
    headers = [(b"cookie", "; ".join(f"{k}={v}" for k, v in (cookies or {}).items()).encode())] if cookies else []
    scope = {"type": "http", "method": "GET", "path": "/portal/x/", "headers": headers, "client": (client, 1234), "query_string": b"",
             "app": SimpleNamespace(state=SimpleNamespace(web=web, secret=SECRET)), "state": {}}
    return Request(scope)


def cookie_value(response: Response, name: str) -> str:
    header = next(v.decode() for k, v in response.raw_headers if k == b"set-cookie" and v.decode().startswith(name + "="))
    assert "HttpOnly" in header and "Path=/portal" in header
    return header.split(";", 1)[0].split("=", 1)[1]


def test_problems_land_on_the_api_field_names():
    failure = ApiFailure(422, "CFDI40158", "Hay 2 errores", [{"message": "El régimen no aplica", "code": "CFDI40158", "path": "tax_regime"},
                                                             {"message": "CP desconocido", "code": "TIMBRA_ZIP_UNKNOWN", "path": "zip"}])
    assert problems_by_field(failure) == {"tax_regime": ["El régimen no aplica (CFDI40158)"], "zip": ["CP desconocido (TIMBRA_ZIP_UNKNOWN)"]}
    assert problems_by_field(ApiFailure(429, "TIMBRA_PORTAL_RATE_LIMITED", "Demasiadas búsquedas")) == {"general": ["Demasiadas búsquedas (TIMBRA_PORTAL_RATE_LIMITED)"]}


def test_receipts_are_kept_sealed_per_portal():
    response = Response()
    receipt = "rcpt.7f3a9c"  # "." is not in the token's alphabet: it can only show if it is in clear
    keep_receipt(request(), response, "tienda", "inv_1", receipt)
    sealed = cookie_value(response, RECEIPTS_COOKIE)
    assert "inv_1" not in sealed and receipt not in sealed
    back = request({RECEIPTS_COOKIE: sealed})
    assert receipt_of(back, "tienda", "inv_1") == receipt
    assert receipt_of(back, "otra-tienda", "inv_1") is None
    tampered = sealed[:-3] + ("AAA" if sealed[-3:] != "AAA" else "BBB")
    assert receipt_of(request({RECEIPTS_COOKIE: tampered}), "tienda", "inv_1") is None
    # a captcha cookie cannot be replayed as a receipts cookie (the cookie name is the AEAD context)
    captcha = Response()
    keep_captcha(request(), captcha, "cap_1")
    sealed_captcha = cookie_value(captcha, CAPTCHA_COOKIE)
    assert captcha_of(request({CAPTCHA_COOKIE: sealed_captcha})) == "cap_1"
    assert receipt_of(request({RECEIPTS_COOKIE: sealed_captcha}), "tienda", "inv_1") is None


def test_the_visitor_address_goes_with_its_proof_and_no_session_of_another_portal():
    api = portal_api(request(client="198.51.100.20"), "tienda", receipt="abc")
    headers = api._headers()
    assert headers[CLIENT_IP_HEADER] == "198.51.100.20"
    assert headers[CLIENT_PROOF_HEADER] == client_proof(SECRET, "198.51.100.20") != client_proof(SECRET, "198.51.100.21")
    assert headers["X-Portal-Receipt"] == "abc" and "Authorization" not in headers and "X-Portal-Session" not in headers
