"""What every portal page uses: the portal API as this visitor (its address, receipts and
customer session), CSRF on every POST, and the receipts cookie."""

from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from timbra_shared.auth import CLIENT_IP_HEADER, CLIENT_PROOF_HEADER, client_proof
from timbra_shared.web.core import CsrfRefused, checked_form, form_text  # noqa: F401 - re-exported for the pages
from timbra_shared.web.core import Api, ApiFailure, Session, Web, is_https

RECEIPTS_COOKIE = "timbra_portal_r"  # invoices generated in this browser: {slug: {invoice_id: receipt}}
CAPTCHA_COOKIE = "timbra_portal_c"  # the captcha shown to this browser, so only its answer counts
MAX_RECEIPTS = 20


class LoginRequired(Exception):
    def __init__(self, slug: str) -> None:
        self.slug = slug


class PasswordChangeRequired(Exception):
    def __init__(self, slug: str) -> None:
        self.slug = slug


def web_of(request: Request) -> Web:
    return request.app.state.web


def customer(request: Request, slug: str) -> Session | None:
    """The logged-in customer of this issuer's portal (a session of another portal is none)."""
    session = web_of(request).session(request)
    return session if session is not None and session.user_id == slug else None


def portal_api(request: Request, slug: str, *, receipt: str | None = None, with_session: bool = True) -> Api:
    headers: dict[str, str] = {}
    address = request.client.host if request.client else "-"
    secret = request.app.state.secret
    if secret:
        headers[CLIENT_IP_HEADER] = address
        headers[CLIENT_PROOF_HEADER] = client_proof(secret, address)
    session = customer(request, slug) if with_session else None
    if session is not None:
        headers["X-Portal-Session"] = session.token
    if receipt:
        headers["X-Portal-Receipt"] = receipt
    return PortalApi(web_of(request).http, headers, request.headers.get("user-agent"))


class PortalApi(Api):
    """The public portal API: no bearer key; the visitor's headers on every call."""

    def __init__(self, http: Any, headers: dict[str, str], user_agent: str | None) -> None:
        super().__init__(http, None, user_agent)
        self.extra = headers

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return super()._headers(extra) | self.extra


def receipts(request: Request) -> dict[str, dict[str, str]]:
    web = web_of(request)
    raw = request.cookies.get(RECEIPTS_COOKIE)
    data = web.sealer.open(raw, RECEIPTS_COOKIE) if raw else None
    return data if isinstance(data, dict) else {}


def receipt_of(request: Request, slug: str, invoice_id: str) -> str | None:
    value = receipts(request).get(slug, {}).get(invoice_id)
    return value if isinstance(value, str) else None


def keep_receipt(request: Request, response: Response, slug: str, invoice_id: str, receipt: str) -> None:
    web = web_of(request)
    data = receipts(request)
    mine = {k: v for k, v in data.get(slug, {}).items() if k != invoice_id}
    mine[invoice_id] = receipt
    data[slug] = dict(list(mine.items())[-MAX_RECEIPTS:])
    response.set_cookie(RECEIPTS_COOKIE, web.sealer.seal(data, RECEIPTS_COOKIE), max_age=30 * 86400, path=web.prefix, httponly=True, samesite="lax", secure=is_https(request))


def captcha_of(request: Request) -> str | None:
    raw = request.cookies.get(CAPTCHA_COOKIE)
    data = web_of(request).sealer.open(raw, CAPTCHA_COOKIE) if raw else None
    return str(data.get("id")) if data and data.get("id") else None


def keep_captcha(request: Request, response: Response, captcha_id: str) -> None:
    web = web_of(request)
    response.set_cookie(CAPTCHA_COOKIE, web.sealer.seal({"id": captcha_id}, CAPTCHA_COOKIE), max_age=600, path=web.prefix, httponly=True, samesite="lax", secure=is_https(request))


def problems_by_field(failure: ApiFailure) -> dict[str, list[str]]:
    """The portal's forms use the API's field names as they are (``rfc``, ``total``, ``use``…)."""
    out: dict[str, list[str]] = {}
    for err in failure.errors:
        if not isinstance(err, dict):
            continue
        text = str(err.get("message") or "")
        code = err.get("code")
        if code and code not in text:
            text = f"{text} ({code})"
        out.setdefault(str(err.get("path") or "general").split(".")[-1], []).append(text)
    if not failure.errors:
        out.setdefault("general", []).append(failure.message + (f" ({failure.code})" if failure.code and not failure.code.startswith("http_") and failure.code not in failure.message else ""))
    return out
