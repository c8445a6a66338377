"""Use cases of issuer-profile: onboarding, users, API keys and sessions, the CSD vault, logo,
SMTP settings, document types and series, CSD-expiry notices, and sealing."""

import asyncio
import hashlib
import hmac
import math
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from timbra_issuer_profile.adapters.repository import IssuerRepository
from timbra_issuer_profile.adapters.smtp_probe import ProbeResult, SmtpTarget, probe_async
from timbra_issuer_profile.adapters.vault import Vault
from timbra_issuer_profile.domain.issuer import (
    CsdStatus,
    active_certificate,
    csd_message,
    expiry_certificate,
    expiry_email,
    missing_acceptances,
    normalize_phone,
    normalize_rfc,
    slugify,
    validate_address,
    validate_document_types,
    validate_fiscal_data,
    validate_phone,
    validate_series,
)
from timbra_issuer_profile.domain.logo import DEFAULT_PLACEMENT, validate_logo
from timbra_issuer_profile.domain.users import (
    DUMMY_HASH,
    ISSUER_ROLES,
    LOGIN_LOCK,
    LOGIN_MAX_FAILURES,
    LOGIN_WINDOW,
    STAFF_ROLES,
    after_failed_login,
    hash_password,
    initials_of,
    login_locked_for,
    needs_rehash,
    normalize_username,
    validate_password,
    validate_user,
    verify_password,
)
from timbra_shared.auth import Principal, hash_api_key, sign_token
from timbra_shared.cfdi import CsdError, load_csd, seal_xml
from timbra_shared.cfdi.csd import load_certificate, rfc_from_certificate
from timbra_shared.cfdi.errors import CfdiError
from timbra_shared.errors import ApiError, Problem, RetryLater
from timbra_shared.events import (
    ErrorDetail,
    InvoiceBuilt,
    InvoiceRejected,
    InvoiceSealed,
    IssuerProfileChanged,
    NotificationRequested,
)
from timbra_shared.ids import new_id, utcnow
from timbra_shared.logging import get_logger
from timbra_shared.messaging import trace_of
from timbra_shared.mongo import Store, Transaction, Unit

log = get_logger(__name__)

SESSION_TTL = timedelta(hours=12)
ALL_TYPES = ["I", "E", "T", "P"]
# scrypt costs 128 MiB per hash: at most two at a time per process.
_KDF_SLOTS = asyncio.Semaphore(2)


def new_api_key(livemode: bool) -> str:
    return ("tk_live_" if livemode else "tk_test_") + secrets.token_urlsafe(32)


def invalid(problems: list[Problem], status: int = 422) -> ApiError:
    message = problems[0].message if len(problems) == 1 else f"La solicitud tiene {len(problems)} errores."
    return ApiError(status, problems[0].code if len(problems) == 1 else "invalid_request", message, problems)


def actor_of(principal: Principal, user_agent: str | None = None) -> dict[str, Any]:
    """Who did something, for the audit fields (acceptances, key creation)."""
    return {"kind": principal.kind, "key_id": principal.key_id, "user_id": None, "user_agent": (user_agent or "")[:200] or None}


async def _kdf(fn: Any, *args: Any) -> Any:
    async with _KDF_SLOTS:
        return await asyncio.to_thread(fn, *args)


class IssuerService:
    def __init__(
        self,
        *,
        store: Store,
        repo: IssuerRepository,
        vault: Vault,
        admin_key: str,
        internal_secret: str,
        smtp_probe: Any = probe_async,
        login_max_failures: int = LOGIN_MAX_FAILURES,
        login_lock: timedelta = LOGIN_LOCK,
    ) -> None:
        self.login_max_failures = login_max_failures
        self.login_lock = login_lock
        self.store = store
        self.repo = repo
        self.vault = vault
        self._admin_hash = hash_api_key(admin_key) if admin_key else None
        self._internal_secret = internal_secret
        self._csd_cache: dict[str, tuple[str, Any]] = {}
        self._smtp_probe = smtp_probe

    # ------------------------------------------------------------------ onboarding

    async def create_issuer(
        self,
        *,
        rfc: str,
        legal_name: str,
        tax_regime: str,
        zip_code: str,
        email: str | None,
        phone: str | None = None,
        actor: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], str]:
        rfc = normalize_rfc(rfc)
        problems = validate_fiscal_data(rfc, tax_regime, zip_code) + validate_phone(phone)
        if problems:
            raise invalid(problems)
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
            "phone": normalize_phone(phone) if phone else None,
            "slug": slug,
            "acceptances": {},
            "enabled_types": list(ALL_TYPES),
            "series": {},
            "version": 1,
            "created_at": now,
        }
        key = new_api_key(livemode=False)

        async def work(tx: Transaction) -> None:
            await self.repo.insert_issuer(issuer, session=tx.session)
            await self.repo.insert_key(self._key_doc(issuer["_id"], key, livemode=False, name="Llave inicial", actor=actor), session=tx.session)
            tx.emit(self.profile_event(issuer), key=issuer["_id"])

        await self.store.transact(work)
        return issuer, key

    def _key_doc(self, issuer_id: str | None, key: str, *, livemode: bool, name: str | None = None, actor: dict[str, Any] | None = None, kind: str = "issuer", role: str | None = None) -> dict[str, Any]:
        return {
            "_id": new_id("key_"),
            "kind": kind,
            "issuer_id": issuer_id,
            "role": role,
            "name": name,
            "hash": hash_api_key(key),
            "prefix": key[:12],
            "last4": key[-4:],
            "livemode": livemode,
            "created_at": utcnow(),
            "created_by": actor,
            "revoked_at": None,
            "last_used_at": None,
        }

    @staticmethod
    def profile_event(issuer: dict[str, Any]) -> IssuerProfileChanged:
        logo = issuer.get("logo") or {}
        return IssuerProfileChanged(
            issuer_id=issuer["_id"],
            version=issuer["version"],
            rfc=issuer["rfc"],
            legal_name=issuer["legal_name"],
            tax_regime=issuer["tax_regime"],
            zip=issuer["zip"],
            email=issuer.get("email"),
            slug=issuer["slug"],
            enabled_types=issuer.get("enabled_types", ALL_TYPES),
            series=issuer.get("series", {}),
            phone=issuer.get("phone"),
            fiscal_address=issuer.get("fiscal_address"),
            issuing_address=issuer.get("issuing_address"),
            logo_id=logo.get("id"),
            logo_url=f"/internal/v1/issuers/{issuer['_id']}/logo" if logo.get("id") else None,
            logo_placement=logo.get("placement") if logo.get("id") else None,
            smtp_configured=bool(issuer.get("smtp")),
        )

    async def _change(self, issuer_id: str, changes: dict[str, Any], *, unset: list[str] | None = None, extra: Any = None) -> dict[str, Any]:
        """Apply a profile change and publish the new profile, in one transaction."""

        async def work(tx: Transaction) -> dict[str, Any]:
            if extra is not None:
                await extra(tx)
            issuer = await self.repo.update(issuer_id, changes, session=tx.session, unset=unset)
            if issuer is None:
                raise ApiError(404, "not_found", "Emisor no encontrado.")
            tx.emit(self.profile_event(issuer), key=issuer_id)
            return issuer

        return await self.store.transact(work)  # type: ignore[return-value]

    async def _issuer(self, issuer_id: str) -> dict[str, Any]:
        issuer = await self.repo.get(issuer_id)
        if issuer is None:
            raise ApiError(404, "not_found", "Emisor no encontrado.")
        return issuer

    async def set_acceptances(self, issuer_id: str, accepted: dict[str, bool], actor: dict[str, Any] | str) -> dict[str, Any]:
        now = utcnow()
        by = actor if isinstance(actor, dict) else {"kind": "api_key", "key_id": actor}
        changes = {f"acceptances.{name}": {"accepted_at": now, "by": by} for name, value in accepted.items() if value}
        if not changes:
            raise ApiError(422, "TIMBRA_ACCEPTANCE_REQUIRED", "Indica qué aceptas: privacy_notice y/o carta_manifiesto en true.")
        return await self._change(issuer_id, changes)

    async def update_fiscal_data(self, issuer_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        issuer = await self._issuer(issuer_id)
        merged = {k: issuer.get(k) for k in ("rfc", "legal_name", "tax_regime", "zip", "phone", "email")} | fields
        merged["rfc"] = normalize_rfc(merged["rfc"])
        problems = validate_fiscal_data(merged["rfc"], merged["tax_regime"], merged["zip"]) + validate_phone(merged.get("phone"))
        if problems:
            raise invalid(problems)
        if merged["rfc"] != issuer["rfc"] and await self.repo.csds_of(issuer_id):
            raise ApiError(409, "TIMBRA_RFC_LOCKED", "El RFC no se puede cambiar porque el emisor ya tiene certificados (CSD) cargados; da de alta un emisor nuevo para otro RFC.", [Problem("TIMBRA_RFC_LOCKED", "El RFC no se puede cambiar.", path="rfc")])
        if merged.get("phone"):
            merged["phone"] = normalize_phone(merged["phone"])
        if merged.get("legal_name"):
            merged["legal_name"] = merged["legal_name"].strip()
        changes = {k: v for k, v in merged.items() if k in fields}
        return await self._change(issuer_id, changes)

    async def set_addresses(self, issuer_id: str, fiscal: dict[str, Any] | None, issuing: dict[str, Any] | None, same_as_fiscal: bool) -> dict[str, Any]:
        issuer = await self._issuer(issuer_id)
        fiscal = fiscal if fiscal is not None else issuer.get("fiscal_address")
        problems: list[Problem] = []
        if fiscal is None:
            problems.append(Problem("TIMBRA_ADDRESS_REQUIRED", "Captura primero la dirección fiscal.", path="fiscal"))
        else:
            problems += validate_address(fiscal, "fiscal")
        if same_as_fiscal:
            issuing = dict(fiscal) if fiscal else None
        elif issuing is not None:
            problems += validate_address(issuing, "issuing")
        else:
            issuing = issuer.get("issuing_address")
        if problems:
            raise invalid(problems)
        changes: dict[str, Any] = {"fiscal_address": fiscal, "issuing_same_as_fiscal": same_as_fiscal}
        if issuing is not None:
            changes["issuing_address"] = issuing
        return await self._change(issuer_id, changes)

    async def set_document_types(self, issuer_id: str, types: list[str]) -> dict[str, Any]:
        types = list(dict.fromkeys(t.upper() for t in types))
        problems = validate_document_types(types)
        if problems:
            raise invalid(problems)
        return await self._change(issuer_id, {"enabled_types": [t for t in ALL_TYPES if t in types]})

    async def set_series(self, issuer_id: str, series: dict[str, str | None]) -> dict[str, Any]:
        clean = {k.upper(): v.strip() for k, v in series.items() if v}
        problems = validate_series(clean) + validate_series({k.upper(): "X" for k, v in series.items() if not v})
        if problems:
            raise invalid(problems)
        issuer = await self._issuer(issuer_id)
        merged = {**issuer.get("series", {}), **clean}
        for k, v in series.items():
            if not v:
                merged.pop(k.upper(), None)
        return await self._change(issuer_id, {"series": merged})

    async def profile(self, issuer_id: str) -> dict[str, Any] | None:
        return await self.repo.get(issuer_id)

    async def csd_status(self, issuer_id: str) -> CsdStatus | None:
        csds = await self.repo.csds_of(issuer_id)
        now = utcnow()
        current = active_certificate(csds, now) or expiry_certificate(csds, now) or (csds[0] if csds else None)
        if current is None:
            return None
        return CsdStatus(serial=current["serial"], valid_from=current["valid_from"], valid_to=current["valid_to"])

    async def expiry_status(self, issuer_id: str) -> CsdStatus | None:
        """The certificate whose expiry the issuer must hear about (the longest-lasting one)."""
        doc = expiry_certificate(await self.repo.csds_of(issuer_id), utcnow())
        return None if doc is None else CsdStatus(serial=doc["serial"], valid_from=doc["valid_from"], valid_to=doc["valid_to"])

    # ------------------------------------------------------------------ users and sessions

    async def create_user(self, issuer_id: str | None, body: dict[str, Any]) -> dict[str, Any]:
        roles = STAFF_ROLES if issuer_id is None else ISSUER_ROLES
        body = dict(body)
        body["username"] = normalize_username(body.get("username") or "")
        body.setdefault("role", roles[0])
        if not body.get("initials") and body.get("name"):
            body["initials"] = initials_of(body["name"])
        problems = validate_user(body, allowed_roles=roles) + validate_password(body.get("password") or "", body.get("password_confirmation"), username=body["username"])
        if problems:
            raise invalid(problems)
        password_hash = await _kdf(hash_password, body["password"])
        doc = {
            "_id": new_id("usr_"),
            "issuer_id": issuer_id,
            "name": body["name"].strip(),
            "email": body["email"].strip().lower(),
            "alt_email": (body.get("alt_email") or "").strip().lower() or None,
            "phone": normalize_phone(body["phone"]) if body.get("phone") else None,
            "initials": body.get("initials"),
            "username": body["username"],
            "role": body["role"],
            "password_hash": password_hash,
            "created_at": utcnow(),
            "disabled_at": None,
        }
        phone_problems = validate_phone(body.get("phone"))
        if phone_problems:
            raise invalid(phone_problems)
        try:
            await self.repo.insert_user(doc)
        except DuplicateKeyError:
            raise ApiError(409, "TIMBRA_USERNAME_TAKEN", f"El usuario {doc['username']} ya existe; elige otro.", [Problem("TIMBRA_USERNAME_TAKEN", "El usuario ya existe.", path="username")]) from None
        doc.pop("password_hash")
        log.info("user.created", user_id=doc["_id"], issuer_id=issuer_id, role=doc["role"])
        return doc

    @staticmethod
    def _scope(issuer_id: str | None) -> dict[str, Any]:
        return {"issuer_id": issuer_id}

    async def users(self, issuer_id: str | None) -> list[dict[str, Any]]:
        return await self.repo.users_of(self._scope(issuer_id))

    async def user(self, issuer_id: str | None, user_id: str) -> dict[str, Any]:
        doc = await self.repo.user(user_id, self._scope(issuer_id))
        if doc is None:
            raise ApiError(404, "not_found", "Usuario no encontrado.")
        return doc

    async def update_user(self, issuer_id: str | None, user_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        current = await self.repo.user(user_id, self._scope(issuer_id), secret=True)
        if current is None:
            raise ApiError(404, "not_found", "Usuario no encontrado.")
        roles = STAFF_ROLES if issuer_id is None else ISSUER_ROLES
        merged = {**current, **{k: v for k, v in fields.items() if k not in ("password", "password_confirmation", "current_password")}}
        problems = validate_user(merged, allowed_roles=roles) + validate_phone(merged.get("phone"))
        changes = {k: v for k, v in fields.items() if k in ("name", "email", "alt_email", "phone", "initials", "role")}
        if "phone" in changes and changes["phone"]:
            changes["phone"] = normalize_phone(changes["phone"])
        if fields.get("password") is not None:
            problems += validate_password(fields["password"], fields.get("password_confirmation"), username=current["username"])
        if problems:
            raise invalid(problems)
        if fields.get("password") is not None:
            changes["password_hash"] = await _kdf(hash_password, fields["password"])
            changes["password_changed_at"] = utcnow()
        doc = await self.repo.update_user(user_id, self._scope(issuer_id), changes)
        if "password_hash" in changes:
            await self.repo.revoke_sessions_of(user_id, utcnow())
        assert doc is not None
        return doc

    async def disable_user(self, issuer_id: str | None, user_id: str) -> dict[str, Any]:
        doc = await self.repo.update_user(user_id, self._scope(issuer_id), {"disabled_at": utcnow()})
        if doc is None:
            raise ApiError(404, "not_found", "Usuario no encontrado.")
        await self.repo.revoke_sessions_of(user_id, utcnow())
        return doc

    async def login(self, username: str, password: str) -> dict[str, Any]:
        name = normalize_username(username)
        now = utcnow()
        failures = await self.repo.login_failures_of(name)
        wait = login_locked_for(failures, now)
        if wait:
            log.warning("user.login_locked", retry_after=wait)
            error = ApiError(429, "TIMBRA_LOGIN_LOCKED", f"Demasiados intentos fallidos con este usuario; espera {math.ceil(wait / 60)} min e intenta de nuevo, "
                             "o restablece la contraseña con el administrador.")
            error.retry_after = wait  # type: ignore[attr-defined]
            raise error
        user = await self.repo.user_by_username(name)
        ok = await _kdf(verify_password, password, user["password_hash"] if user else DUMMY_HASH)
        if user is None or not ok:
            # unknown usernames are counted too, so a lockout tells nothing about which users exist
            record = after_failed_login(failures, now, max_failures=self.login_max_failures, lock=self.login_lock)
            await self.repo.save_login_failures(name, record, expire_at=max(record["first_at"] + LOGIN_WINDOW, record["locked_until"] or now))
            raise ApiError(401, "TIMBRA_LOGIN_FAILED", "Usuario o contraseña incorrectos.")
        if failures is not None:
            await self.repo.clear_login_failures(name)
        if needs_rehash(user["password_hash"]):
            await self.repo.update_user(user["_id"], {}, {"password_hash": await _kdf(hash_password, password)})
        token = "tk_sess_" + secrets.token_urlsafe(32)
        session = {
            "_id": new_id("ses_"),
            "hash": hash_api_key(token),
            "user_id": user["_id"],
            "issuer_id": user.get("issuer_id"),
            "role": user["role"],
            "created_at": now,
            "expires_at": now + SESSION_TTL,
            "revoked_at": None,
        }
        await self.repo.insert_session(session)
        await self.repo.update_user(user["_id"], {}, {"last_login_at": now})
        log.info("user.login", user_id=user["_id"], issuer_id=user.get("issuer_id"))
        return {"token": token, "expires_at": session["expires_at"], "user": {k: v for k, v in user.items() if k != "password_hash"}, "session_id": session["_id"]}

    async def logout(self, session_id: str) -> None:
        await self.repo.revoke_session(session_id, utcnow())

    # ------------------------------------------------------------------ API keys

    async def create_key(self, issuer_id: str, *, livemode: bool, name: str | None, actor: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
        await self._issuer(issuer_id)
        key = new_api_key(livemode)
        doc = self._key_doc(issuer_id, key, livemode=livemode, name=name, actor=actor)
        await self.repo.insert_key(doc)
        log.info("api_key.created", issuer_id=issuer_id, key_id=doc["_id"], livemode=livemode)
        doc.pop("hash")
        return doc, key

    async def create_staff_key(self, *, role: str, name: str | None, actor: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
        if role not in STAFF_ROLES:
            raise ApiError(422, "TIMBRA_ROLE_INVALID", f"Rol no permitido: {role}. Usa {', '.join(STAFF_ROLES)}.", [Problem("TIMBRA_ROLE_INVALID", "Rol no permitido.", path="role")])
        key = "tk_staff_" + secrets.token_urlsafe(32)
        doc = self._key_doc(None, key, livemode=True, name=name, actor=actor, kind="staff", role=role)
        await self.repo.insert_key(doc)
        doc.pop("hash")
        return doc, key

    async def keys(self, issuer_id: str | None, *, staff: bool = False) -> list[dict[str, Any]]:
        return await self.repo.keys_of(issuer_id, staff=staff)

    async def revoke_key(self, key_id: str, *, issuer_id: str | None, staff: bool = False) -> dict[str, Any]:
        query = {"kind": "staff"} if staff else {"issuer_id": issuer_id}
        doc = await self.repo.revoke_key(key_id, query, utcnow())
        if doc is None:
            raise ApiError(404, "not_found", "Llave de API no encontrada.")
        log.info("api_key.revoked", issuer_id=issuer_id, key_id=key_id)
        return doc

    async def authenticate(self, key: str) -> Principal | None:
        if self._admin_hash and hmac.compare_digest(hash_api_key(key), self._admin_hash):
            return Principal(kind="admin", roles=("admin",))
        digest = hash_api_key(key)
        if key.startswith("tk_sess_"):
            session = await self.repo.session_by_hash(digest, utcnow())
            if session is None:
                return None
            if session.get("issuer_id"):
                return Principal(kind="issuer", issuer_id=session["issuer_id"], roles=(session["role"],), livemode=False, key_id=session["_id"])
            return Principal(kind="staff", roles=(session["role"],), key_id=session["_id"])
        doc = await self.repo.key_by_hash(digest)
        if doc is None:
            return None
        if doc.get("kind") == "staff":
            return Principal(kind="staff", roles=(doc["role"],), key_id=doc["_id"])
        return Principal(kind="issuer", issuer_id=doc["issuer_id"], livemode=doc["livemode"], key_id=doc["_id"])

    async def exchange(self, key: str) -> str | None:
        principal = await self.authenticate(key)
        if principal is not None and principal.key_id and principal.key_id.startswith("key_"):
            await self.repo.touch_key(principal.key_id, utcnow())
        return sign_token(principal, self._internal_secret) if principal else None

    async def actor(self, principal: Principal, user_agent: str | None = None) -> dict[str, Any]:
        actor = actor_of(principal, user_agent)
        if principal.key_id and principal.key_id.startswith("ses_"):
            session = await self.repo.sessions.find_one({"_id": principal.key_id}, projection={"user_id": 1})
            actor["kind"], actor["user_id"] = "user", session and session["user_id"]
        return actor

    # ------------------------------------------------------------------ CSD vault

    async def upload_csd(self, issuer_id: str, cer: bytes, key: bytes, password: str) -> dict[str, Any]:
        issuer = await self._issuer(issuer_id)
        try:
            csd = load_csd(cer, key, password, rfc=issuer["rfc"], at=utcnow())
        except CsdError as exc:
            message = self._csd_rejection(exc, cer, issuer["rfc"])
            log.info("csd.rejected", issuer_id=issuer_id, code=exc.code)
            raise ApiError(422, exc.code, message, [Problem(exc.code, message, path="password" if exc.code == CsdError.WRONG_PASSWORD else "csd")]) from None
        existing = await self.repo.csd_by_serial(issuer_id, csd.serial)
        now = utcnow()
        if existing is None:
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
                "uploaded_at": now,
            }
            try:
                await self.repo.insert_csd(doc)
            except DuplicateKeyError:
                pass  # the same certificate uploaded twice at once
        self._csd_cache.pop(issuer_id, None)
        log.info("csd.uploaded", issuer_id=issuer_id, serial=csd.serial, again=existing is not None)
        await self.check_expiry(issuer_id)
        active = active_certificate(await self.repo.csds_of(issuer_id), now)
        return {
            "serial": csd.serial,
            "valid_from": csd.valid_from.isoformat(),
            "valid_to": csd.valid_to.isoformat(),
            "active": active is not None and active["serial"] == csd.serial,
        }

    @staticmethod
    def _csd_rejection(exc: CsdError, cer: bytes, rfc: str) -> str:
        cert_rfc, date = "", ""
        try:
            cert = load_certificate(cer)
            cert_rfc = rfc_from_certificate(cert) or ""
            when = cert.not_valid_after_utc if exc.code == CsdError.EXPIRED else cert.not_valid_before_utc
            date = when.strftime("%d/%m/%Y")
        except CsdError:
            pass
        return csd_message(exc.code, rfc=rfc, cert_rfc=cert_rfc, date=date, fallback=str(exc))

    async def csds(self, issuer_id: str) -> list[dict[str, Any]]:
        docs = await self.repo.csds_of(issuer_id)
        now = utcnow()
        active = active_certificate(docs, now)
        out = []
        for d in docs:
            status = CsdStatus(serial=d["serial"], valid_from=d["valid_from"], valid_to=d["valid_to"])
            out.append({
                "serial": d["serial"],
                "rfc": d["rfc"],
                "valid_from": d["valid_from"].isoformat(),
                "valid_to": d["valid_to"].isoformat(),
                "days_left": status.days_left(now),
                "status": "active" if active and d["_id"] == active["_id"] else ("expired" if status.expired(now) else ("pending" if d["valid_from"] > now else "standby")),
                "uploaded_at": d["uploaded_at"].isoformat(),
            })
        return out

    async def delete_csd(self, issuer_id: str, serial: str) -> None:
        if not await self.repo.delete_csd(issuer_id, serial):
            raise ApiError(404, "not_found", "Certificado no encontrado.")
        self._csd_cache.pop(issuer_id, None)
        log.info("csd.deleted", issuer_id=issuer_id, serial=serial)

    async def active_csd(self, issuer_id: str, now: datetime) -> tuple[Any | None, Problem | None]:
        csds = await self.repo.csds_of(issuer_id)  # without key material: cheap, and sees uploads by other instances
        if not csds:
            return None, Problem("TIMBRA_CSD_MISSING", "El emisor no tiene un certificado de sello digital (CSD) cargado.")
        chosen = active_certificate(csds, now)
        if chosen is None:
            return None, Problem("TIMBRA_CSD_EXPIRED", "El certificado de sello digital (CSD) del emisor está vencido o aún no es vigente; sube uno vigente.")
        cached = self._csd_cache.get(issuer_id)
        if cached and cached[0] == chosen["_id"]:
            return cached[1], None
        doc = await self.repo.csd(chosen["_id"])
        if doc is None:
            raise RetryLater("csd deleted while sealing")
        try:
            key, password = self.vault.open(doc["key"]), self.vault.open(doc["password"]).decode()
        except KeyError:
            # sealed under a master key this instance does not have yet (a rotation in progress)
            raise RetryLater("master key not available for this CSD") from None
        csd = load_csd(doc["cer"], key, password)
        self._csd_cache[issuer_id] = (doc["_id"], csd)
        return csd, None

    # ------------------------------------------------------------------ CSD expiry notices

    async def check_expiry(self, issuer_id: str, now: datetime | None = None) -> list[int]:
        """Emit one NotificationRequested per certificate and threshold (30 days, 7 days, expired).

        Only the most severe threshold reached is mailed; lesser ones are marked as done with it,
        so a certificate uploaded with 5 days left gets one email, not two. The notice id is the
        dedupe key, written in the same transaction as the event: a second run, or a second
        instance, sends nothing."""
        now = now or utcnow()
        issuer = await self.repo.get(issuer_id)
        doc = expiry_certificate(await self.repo.csds_of(issuer_id), now)
        if issuer is None or doc is None:
            return []
        status = CsdStatus(serial=doc["serial"], valid_from=doc["valid_from"], valid_to=doc["valid_to"])
        threshold = status.threshold(now)
        if threshold is None:
            return []
        if await self.repo.csd_notices.find_one({"_id": f"{doc['_id']}:{threshold}"}, projection={"_id": 1}):
            return []
        recipients = list(dict.fromkeys([e for e in [issuer.get("email"), *await self.repo.owner_emails(issuer_id)] if e]))[:10]
        if not recipients:
            return []
        subject, body = expiry_email(issuer["legal_name"], issuer["rfc"], doc["serial"], threshold, doc["valid_to"], now)
        lesser = [t for t in (30, 7, 0) if t > threshold] if threshold else [30, 7]

        async def work(tx: Transaction) -> None:
            for t in (threshold, *lesser):
                notice_id = f"{doc['_id']}:{t}"
                if t != threshold and await self.repo.csd_notices.find_one({"_id": notice_id}, session=tx.session):
                    continue  # a write error would abort the transaction, so look first
                await self.repo.claim_notice(notice_id, {"issuer_id": issuer_id, "serial": doc["serial"], "threshold": t, "at": now, "mailed": t == threshold}, session=tx.session)
            tx.emit(NotificationRequested(
                issuer_id=issuer_id,
                kind="csd.expired" if threshold == 0 else "csd.expiring",
                to=recipients,
                subject=subject,
                body=body,
            ), key=issuer_id)

        try:
            await self.store.transact(work)
        except DuplicateKeyError:
            return []
        log.info("csd.expiry_notice", issuer_id=issuer_id, serial=doc["serial"], threshold=threshold)
        return [threshold]

    async def check_all_expiries(self) -> int:
        sent = 0
        for issuer_id in await self.repo.all_issuer_ids():
            try:
                sent += len(await self.check_expiry(issuer_id))
            except Exception as exc:  # one issuer's problem never stops the others
                log.warning("csd.expiry_check_failed", issuer_id=issuer_id, error=repr(exc))
        return sent

    async def expiry_loop(self, interval: float) -> None:
        while True:
            try:
                await self.check_all_expiries()
            except Exception as exc:
                log.warning("csd.expiry_check_failed", error=repr(exc))
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ logo

    async def set_logo(self, issuer_id: str, data: bytes, placement: str | None) -> dict[str, Any]:
        info, problems = validate_logo(data)
        if problems:
            raise invalid(problems, status=413 if problems[0].code == "TIMBRA_LOGO_TOO_LARGE" else 422)
        assert info is not None
        issuer = await self._issuer(issuer_id)
        logo_id = new_id("logo_")
        placement = placement or (issuer.get("logo") or {}).get("placement") or DEFAULT_PLACEMENT
        meta = {
            "id": logo_id,
            "content_type": info.content_type,
            "width": info.width,
            "height": info.height,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "placement": placement,
            "uploaded_at": utcnow(),
        }

        async def store_logo(tx: Transaction) -> None:
            await self.repo.insert_logo({"_id": logo_id, "issuer_id": issuer_id, "content_type": info.content_type, "data": data, "created_at": utcnow()}, session=tx.session)
            await self.repo.delete_logos_except(issuer_id, logo_id, session=tx.session)

        return await self._change(issuer_id, {"logo": meta}, extra=store_logo)

    async def set_logo_placement(self, issuer_id: str, placement: str) -> dict[str, Any]:
        issuer = await self._issuer(issuer_id)
        if not issuer.get("logo"):
            raise ApiError(409, "TIMBRA_LOGO_MISSING", "Primero sube un logotipo.")
        return await self._change(issuer_id, {"logo.placement": placement})

    async def delete_logo(self, issuer_id: str) -> dict[str, Any]:
        async def drop(tx: Transaction) -> None:
            await self.repo.delete_logos_except(issuer_id, None, session=tx.session)

        return await self._change(issuer_id, {}, unset=["logo"], extra=drop)

    async def logo(self, issuer_id: str) -> dict[str, Any] | None:
        issuer = await self.repo.get(issuer_id)
        meta = (issuer or {}).get("logo")
        if not meta:
            return None
        return await self.repo.logo(meta["id"], issuer_id)

    # ------------------------------------------------------------------ SMTP settings

    async def set_smtp(self, issuer_id: str, settings: dict[str, Any]) -> dict[str, Any]:
        issuer = await self._issuer(issuer_id)
        current = issuer.get("smtp") or {}
        password = settings.pop("password", None)
        if password:
            blob = self.vault.seal(password.encode(), context=f"smtp:{issuer_id}:password")
        elif current.get("password") and current.get("host") == settings["host"] and current.get("username") == settings.get("username"):
            blob = current["password"]  # unchanged: the form leaves the password empty
        elif settings.get("username"):
            raise ApiError(422, "TIMBRA_SMTP_PASSWORD_REQUIRED", "Escribe la contraseña del correo.", [Problem("TIMBRA_SMTP_PASSWORD_REQUIRED", "Falta la contraseña.", path="password")])
        else:
            blob = None
        smtp = {**settings, "password": blob, "updated_at": utcnow(), "last_test": None}
        return await self._change(issuer_id, {"smtp": smtp})

    async def delete_smtp(self, issuer_id: str) -> dict[str, Any]:
        return await self._change(issuer_id, {}, unset=["smtp"])

    def _smtp_password(self, smtp: dict[str, Any]) -> str | None:
        return self.vault.open(smtp["password"]).decode() if smtp.get("password") else None

    async def test_smtp(self, issuer_id: str, settings: dict[str, Any] | None) -> ProbeResult:
        """Connect and log in with the given settings, or the saved ones."""
        issuer = await self._issuer(issuer_id)
        saved = issuer.get("smtp")
        if settings is None:
            if not saved:
                raise ApiError(409, "TIMBRA_SMTP_NOT_CONFIGURED", "No hay configuración de correo guardada; se usa el remitente de la plataforma.")
            settings = {k: saved.get(k) for k in ("host", "port", "security", "username")}
            password = self._smtp_password(saved)
        else:
            password = settings.get("password")
            if not password and saved and saved.get("host") == settings.get("host") and saved.get("username") == settings.get("username"):
                password = self._smtp_password(saved)
        result = await self._smtp_probe(SmtpTarget(host=settings["host"], port=int(settings["port"]), security=settings["security"], username=settings.get("username"), password=password))
        if saved and saved.get("host") == settings["host"] and saved.get("port") == settings["port"]:
            await self.repo.issuers.update_one({"_id": issuer_id}, {"$set": {"smtp.last_test": {"ok": result.ok, "code": result.code, "at": utcnow()}}})
        log.info("smtp.tested", issuer_id=issuer_id, ok=result.ok, code=result.code)
        return result

    async def smtp_for_notifier(self, issuer_id: str) -> dict[str, Any] | None:
        issuer = await self.repo.get(issuer_id)
        smtp = (issuer or {}).get("smtp")
        if not smtp:
            return None
        return {
            "address": smtp["address"],
            "sender_name": smtp.get("sender_name"),
            "host": smtp["host"],
            "port": smtp["port"],
            "security": smtp["security"],
            "username": smtp.get("username"),
            "password": self._smtp_password(smtp),
        }

    # ------------------------------------------------------------------ vault rotation

    async def rewrap_all(self) -> dict[str, int]:
        from timbra_issuer_profile.rotation import rewrap_database

        return await rewrap_database(self.repo.db, self.vault)

    # ------------------------------------------------------------------ sealing

    async def seal(self, event: InvoiceBuilt) -> None:
        await self.store.transact(await self._sealing(event), dedupe=f"{event.event_type}:{event.invoice_id}")

    async def seal_many(self, events: list[InvoiceBuilt]) -> None:
        """Seal a consumed batch and commit it in one transaction (each event keeps its dedupe)."""
        looked_up: dict[tuple[str, str], Any] = {}  # issuer and CSD per issuer, read once per batch
        units = [Unit(await self._sealing(event, looked_up), dedupe=f"{event.event_type}:{event.invoice_id}", trace=trace_of(event)) for event in events]
        await self.store.transact_many(units)

    async def _sealing(self, event: InvoiceBuilt, looked_up: dict[tuple[str, str], Any] | None = None) -> Callable[[Transaction], Awaitable[None]]:
        """Seal ``event``'s CFDI (or find why not); returns the unit of work that records it."""
        cache = {} if looked_up is None else looked_up
        if ("issuer", event.issuer_id) not in cache:
            cache[("issuer", event.issuer_id)] = await self.repo.get(event.issuer_id)
        issuer = cache[("issuer", event.issuer_id)]
        problems: list[Problem] = []
        csd = None
        if issuer is None:
            problems = [Problem("TIMBRA_ISSUER_UNKNOWN", "El emisor no existe.")]
        else:
            problems = missing_acceptances(issuer.get("acceptances", {}))
            if not problems:
                if ("csd", event.issuer_id) not in cache:
                    cache[("csd", event.issuer_id)] = await self.active_csd(event.issuer_id, utcnow())
                csd, problem = cache[("csd", event.issuer_id)]
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
                "built_at": event.occurred_at,
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

        return work
