"""Use cases of issuer-profile: onboarding, API keys, the CSD vault, and sealing."""

import hmac
import secrets
from datetime import datetime
from typing import Any

from timbra_issuer_profile.adapters.repository import IssuerRepository
from timbra_issuer_profile.adapters.vault import Vault
from timbra_issuer_profile.domain.issuer import (
    CsdStatus,
    missing_acceptances,
    normalize_rfc,
    slugify,
    validate_fiscal_data,
)
from timbra_shared.auth import Principal, hash_api_key, sign_token
from timbra_shared.cfdi import CsdError, load_csd, seal_xml
from timbra_shared.cfdi.errors import CfdiError
from timbra_shared.errors import ApiError, Problem
from timbra_shared.events import ErrorDetail, InvoiceBuilt, InvoiceRejected, InvoiceSealed, IssuerProfileChanged
from timbra_shared.ids import new_id, utcnow
from timbra_shared.logging import get_logger
from timbra_shared.mongo import Store, Transaction

log = get_logger(__name__)


def new_api_key(livemode: bool) -> str:
    return ("tk_live_" if livemode else "tk_test_") + secrets.token_urlsafe(32)


class IssuerService:
    def __init__(self, *, store: Store, repo: IssuerRepository, vault: Vault, admin_key: str, internal_secret: str) -> None:
        self.store = store
        self.repo = repo
        self.vault = vault
        self._admin_hash = hash_api_key(admin_key) if admin_key else None
        self._internal_secret = internal_secret
        self._csd_cache: dict[str, tuple[str, Any]] = {}

    # ------------------------------------------------------------------ onboarding

    async def create_issuer(self, *, rfc: str, legal_name: str, tax_regime: str, zip_code: str, email: str | None) -> tuple[dict[str, Any], str]:
        rfc = normalize_rfc(rfc)
        problems = validate_fiscal_data(rfc, tax_regime, zip_code)
        if problems:
            raise ApiError(422, problems[0].code, problems[0].message, problems)
        slug = base = slugify(legal_name)
        while await self.repo.slug_taken(slug):
            slug = f"{base}-{secrets.token_hex(2)}"
        now = utcnow()
        issuer = {
            "_id": new_id("iss_"),
            "rfc": rfc,
            "legal_name": legal_name.strip(),
            "tax_regime": tax_regime,
            "zip": zip_code,
            "email": email,
            "slug": slug,
            "acceptances": {},
            "enabled_types": ["I", "E", "T", "P"],
            "series": {},
            "version": 1,
            "created_at": now,
        }
        key = new_api_key(livemode=False)

        async def work(tx: Transaction) -> None:
            await self.repo.insert_issuer(issuer, session=tx.session)
            await self.repo.insert_key(self._key_doc(issuer["_id"], key, livemode=False), session=tx.session)
            tx.emit(self.profile_event(issuer), key=issuer["_id"])

        await self.store.transact(work)
        return issuer, key

    def _key_doc(self, issuer_id: str, key: str, *, livemode: bool) -> dict[str, Any]:
        return {
            "_id": new_id("key_"),
            "issuer_id": issuer_id,
            "hash": hash_api_key(key),
            "prefix": key[:12],
            "livemode": livemode,
            "created_at": utcnow(),
            "revoked_at": None,
        }

    @staticmethod
    def profile_event(issuer: dict[str, Any]) -> IssuerProfileChanged:
        return IssuerProfileChanged(
            issuer_id=issuer["_id"],
            version=issuer["version"],
            rfc=issuer["rfc"],
            legal_name=issuer["legal_name"],
            tax_regime=issuer["tax_regime"],
            zip=issuer["zip"],
            email=issuer.get("email"),
            slug=issuer["slug"],
            enabled_types=issuer.get("enabled_types", ["I", "E", "T", "P"]),
            series=issuer.get("series", {}),
        )

    async def set_acceptances(self, issuer_id: str, accepted: dict[str, bool], actor: str) -> dict[str, Any]:
        now = utcnow()
        changes = {f"acceptances.{name}": {"accepted_at": now, "by": actor} for name, value in accepted.items() if value}
        if not changes:
            raise ApiError(422, "TIMBRA_ACCEPTANCE_REQUIRED", "Indica qué aceptas: privacy_notice y/o carta_manifiesto en true.")

        async def work(tx: Transaction) -> dict[str, Any]:
            issuer = await self.repo.update(issuer_id, changes, session=tx.session)
            assert issuer is not None
            tx.emit(self.profile_event(issuer), key=issuer_id)
            return issuer

        return await self.store.transact(work)  # type: ignore[return-value]

    async def profile(self, issuer_id: str) -> dict[str, Any] | None:
        return await self.repo.get(issuer_id)

    async def csd_status(self, issuer_id: str) -> CsdStatus | None:
        csds = await self.repo.csds_of(issuer_id)
        now = utcnow()
        current = [c for c in csds if c["valid_from"] <= now <= c["valid_to"]] or csds
        if not current:
            return None
        c = current[0]
        return CsdStatus(serial=c["serial"], valid_from=c["valid_from"], valid_to=c["valid_to"])

    # ------------------------------------------------------------------ API keys

    async def authenticate(self, key: str) -> Principal | None:
        if self._admin_hash and hmac.compare_digest(hash_api_key(key), self._admin_hash):
            return Principal(kind="admin", roles=("admin",))
        doc = await self.repo.key_by_hash(hash_api_key(key))
        if doc is None:
            return None
        return Principal(kind="issuer", issuer_id=doc["issuer_id"], livemode=doc["livemode"], key_id=doc["_id"])

    async def exchange(self, key: str) -> str | None:
        principal = await self.authenticate(key)
        return sign_token(principal, self._internal_secret) if principal else None

    # ------------------------------------------------------------------ CSD vault

    async def upload_csd(self, issuer_id: str, cer: bytes, key: bytes, password: str) -> dict[str, Any]:
        issuer = await self.repo.get(issuer_id)
        assert issuer is not None
        try:
            csd = load_csd(cer, key, password, rfc=issuer["rfc"], at=utcnow())
        except CsdError as exc:
            raise ApiError(422, exc.code, exc.message, [Problem(exc.code, exc.message, path="csd")]) from None
        context = f"csd:{issuer_id}:{csd.serial}"
        doc = {
            "_id": new_id("csd_"),
            "issuer_id": issuer_id,
            "serial": csd.serial,
            "rfc": csd.rfc,
            "valid_from": csd.valid_from,
            "valid_to": csd.valid_to,
            "cer": cer,
            "key": self.vault.seal(key, context=context + ":key"),
            "password": self.vault.seal(password.encode(), context=context + ":password"),
            "uploaded_at": utcnow(),
        }
        await self.repo.insert_csd(doc)
        self._csd_cache.pop(issuer_id, None)
        log.info("csd.uploaded", issuer_id=issuer_id, serial=csd.serial)
        return {"serial": csd.serial, "valid_from": csd.valid_from.isoformat(), "valid_to": csd.valid_to.isoformat()}

    async def active_csd(self, issuer_id: str, now: datetime) -> tuple[Any | None, Problem | None]:
        cached = self._csd_cache.get(issuer_id)
        if cached and cached[1].valid_from <= now <= cached[1].valid_to:
            return cached[1], None
        csds = await self.repo.csds_of(issuer_id)
        if not csds:
            return None, Problem("TIMBRA_CSD_MISSING", "El emisor no tiene un certificado de sello digital (CSD) cargado.")
        valid = [c for c in csds if c["valid_from"] <= now <= c["valid_to"]]
        if not valid:
            return None, Problem("TIMBRA_CSD_EXPIRED", "El certificado de sello digital (CSD) del emisor está vencido o aún no es vigente; sube uno vigente.")
        doc = valid[0]
        csd = load_csd(doc["cer"], self.vault.open(doc["key"]), self.vault.open(doc["password"]).decode())
        self._csd_cache[issuer_id] = (doc["_id"], csd)
        return csd, None

    async def seal(self, event: InvoiceBuilt) -> None:
        issuer = await self.repo.get(event.issuer_id)
        problems: list[Problem] = []
        csd = None
        if issuer is None:
            problems = [Problem("TIMBRA_ISSUER_UNKNOWN", "El emisor no existe.")]
        else:
            problems = missing_acceptances(issuer.get("acceptances", {}))
            if not problems:
                csd, problem = await self.active_csd(event.issuer_id, utcnow())
                if problem:
                    problems = [problem]
                elif csd.rfc != issuer["rfc"]:
                    problems = [Problem("TIMBRA_CSD_RFC_MISMATCH", f"El RFC del certificado ({csd.rfc}) no coincide con el del emisor ({issuer['rfc']}).")]
        sealed_xml = None
        if not problems:
            try:
                sealed_xml = seal_xml(event.xml.encode(), csd)
            except CfdiError as exc:
                problems = [Problem(getattr(exc, "code", "TIMBRA_SEAL_FAILED"), str(exc))]

        async def work(tx: Transaction) -> None:
            await self.repo.record_seal({
                "_id": event.invoice_id,
                "issuer_id": event.issuer_id,
                "no_certificado": csd.serial if csd is not None and not problems else None,
                "rejected": [p.code for p in problems],
                "at": utcnow(),
            }, session=tx.session)
            if problems:
                tx.emit(InvoiceRejected(
                    invoice_id=event.invoice_id,
                    issuer_id=event.issuer_id,
                    stage="built",
                    service="issuer-profile",
                    message=problems[0].message,
                    errors=[ErrorDetail(code=p.code, message=p.message, source=p.source, path=p.path) for p in problems],
                ))
                return
            tx.emit(InvoiceSealed(
                invoice_id=event.invoice_id,
                issuer_id=event.issuer_id,
                summary=event.summary,
                xml=sealed_xml.decode(),
                no_certificado=csd.serial,
            ))

        await self.store.transact(work, dedupe=f"{event.event_type}:{event.invoice_id}")
