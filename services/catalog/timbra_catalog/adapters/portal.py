"""The portal's MongoDB collections (catalog database) and its client for the pipeline services.

Collections, every one scoped by ``issuer_id``:
- ``portal_issuers``: projection of ``issuer.profile`` (slug -> issuer), so the portal resolves its
  path segment without calling issuer-profile;
- ``portal_accounts``: customer accounts (issuer + RFC, scrypt hash, must_change);
- ``portal_sessions``: sha256 of session tokens, TTL-expired;
- ``portal_captchas``: HMAC of the expected answer, single use, TTL-expired;
- ``portal_attempts``: the throttle's windows per kind, issuer and client address, TTL-expired;
- ``portal_invoices``: invoices requested from the portal and where they are;
- ``receptor_invoices``: every stamped invoice of the issuer by receptor RFC (from ``invoice.stamped``),
  what a customer's panel lists.
"""

from datetime import datetime
from typing import Any

import httpx
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from timbra_catalog.domain.portal import THROTTLES, Attempts
from timbra_shared.auth import PRINCIPAL_HEADER, Principal, sign_token


class PortalRepositories:
    def __init__(self, db: AsyncDatabase) -> None:
        self.issuers = db.portal_issuers
        self.accounts = db.portal_accounts
        self.sessions = db.portal_sessions
        self.captchas = db.portal_captchas
        self.attempts = db.portal_attempts
        self.invoices = db.portal_invoices
        self.receptor_invoices = db.receptor_invoices

    async def ensure_indexes(self) -> None:
        await self.issuers.create_indexes([IndexModel([("slug", ASCENDING)], unique=True)])
        await self.accounts.create_indexes([IndexModel([("issuer_id", ASCENDING), ("rfc", ASCENDING)], unique=True)])
        await self.sessions.create_indexes([IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)])
        await self.captchas.create_indexes([IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)])
        await self.attempts.create_indexes([IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)])
        await self.invoices.create_indexes([
            # one live portal invoice per ticket: a double click or two browsers cannot both claim it
            IndexModel([("issuer_id", ASCENDING), ("ticket_id", ASCENDING)], unique=True, partialFilterExpression={"live": True}, name="live_ticket"),
        ])
        await self.receptor_invoices.create_indexes([
            IndexModel([("issuer_id", ASCENDING), ("rfc", ASCENDING), ("stamped_at", DESCENDING)]),
        ])

    # ------------------------------------------------------------------ issuers

    async def project_issuer(self, doc: dict[str, Any]) -> None:
        """A newer profile version replaces an older one; a late, older event is ignored."""
        try:
            await self.issuers.update_one({"_id": doc["_id"], "version": {"$lt": doc["version"]}}, {"$set": doc}, upsert=True)
        except DuplicateKeyError:
            pass  # the stored version is the same or newer

    async def issuer_by_slug(self, slug: str) -> dict[str, Any] | None:
        return await self.issuers.find_one({"slug": slug})

    # ------------------------------------------------------------------ throttle

    async def attempts_of(self, key: str) -> Attempts | None:
        doc = await self.attempts.find_one({"_id": key})
        return Attempts(doc["count"], doc["window_start"]) if doc else None

    async def count_attempt(self, key: str, kind: str, now: datetime) -> None:
        _limit, window = THROTTLES[kind]
        doc = await self.attempts.find_one_and_update(
            {"_id": key, "window_start": {"$gt": now - window}}, {"$inc": {"count": 1}}, return_document=ReturnDocument.AFTER,
        )
        if doc is None:  # no window yet, or it is over: start a new one
            await self.attempts.replace_one({"_id": key}, {"_id": key, "count": 1, "window_start": now, "expires_at": now + window}, upsert=True)

    # ------------------------------------------------------------------ invoices

    async def live_invoice_for_ticket(self, issuer_id: str, ticket_id: str) -> dict[str, Any] | None:
        return await self.invoices.find_one({"issuer_id": issuer_id, "ticket_id": ticket_id, "live": True})

    async def set_invoice(self, invoice_id: str, values: dict[str, Any], session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        return await self.invoices.find_one_and_update({"_id": invoice_id}, {"$set": values}, return_document=ReturnDocument.AFTER, session=session)

    async def receptor_page(self, issuer_id: str, rfc: str, *, filters: dict[str, Any], limit: int, skip: int) -> tuple[list[dict[str, Any]], int]:
        query = {"issuer_id": issuer_id, "rfc": rfc, **filters}
        total = await self.receptor_invoices.count_documents(query)
        docs = await self.receptor_invoices.find(query).sort([("stamped_at", DESCENDING), ("_id", DESCENDING)]).skip(skip).limit(limit).to_list(None)
        return docs, total


class Unavailable(Exception):
    """A pipeline service did not answer (the portal says so and the customer tries again)."""


class PipelineClient:
    """The few pipeline routes the portal needs, called service to service for one issuer with a
    short-lived principal signed by the catalog (the same HMAC token the ingress issues). Only the
    portal's own use cases call it, after they checked who may see the invoice."""

    def __init__(self, urls: dict[str, str], secret: str, http: httpx.AsyncClient | None = None) -> None:
        self.urls, self.secret = urls, secret
        self.http = http or httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=3.0))

    def _headers(self, issuer_id: str) -> dict[str, str]:
        return {PRINCIPAL_HEADER: sign_token(Principal(kind="issuer", issuer_id=issuer_id, roles=("portal",)), self.secret, ttl=60)}

    async def _call(self, method: str, service: str, path: str, issuer_id: str, **kwargs: Any) -> httpx.Response:
        base = self.urls.get(service)
        if not base:
            raise Unavailable(service)
        try:
            return await self.http.request(method, f"{base}{path}", headers=self._headers(issuer_id), **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(service) from exc

    async def invoice(self, issuer_id: str, invoice_id: str) -> dict[str, Any] | None:
        response = await self._call("GET", "cfdi-builder", f"/v1/invoices/{invoice_id}", issuer_id)
        return response.json() if response.status_code == 200 else None

    async def stamping(self, issuer_id: str, invoice_id: str) -> dict[str, Any] | None:
        response = await self._call("GET", "stamping", f"/v1/invoices/{invoice_id}/stamping", issuer_id)
        return response.json() if response.status_code == 200 else None

    async def document(self, issuer_id: str, invoice_id: str, kind: str) -> httpx.Response:
        service = "stamping" if kind == "xml" else "notifier"
        return await self._call("GET", service, f"/v1/invoices/{invoice_id}/{kind}", issuer_id)

    async def email(self, issuer_id: str, invoice_id: str, emails: list[str]) -> httpx.Response:
        return await self._call("POST", "notifier", f"/v1/invoices/{invoice_id}/email", issuer_id, json={"emails": emails})

    async def aclose(self) -> None:
        await self.http.aclose()

