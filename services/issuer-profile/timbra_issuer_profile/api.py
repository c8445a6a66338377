"""HTTP routes owned by issuer-profile: the issuer's profile and onboarding steps, users and
sessions, API keys, CSDs, logo, SMTP settings, staff, and the internal routes (key exchange,
logo and SMTP settings for the notifier, CSD-expiry check)."""

import hmac
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Header, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from timbra_issuer_profile.domain.issuer import CsdStatus, missing_acceptances
from timbra_issuer_profile.domain.logo import MAX_LOGO_BYTES
from timbra_issuer_profile.service import IssuerService
from timbra_shared.auth import Principal, current_principal, issuer_principal, require_roles
from timbra_shared.errors import ApiError, Problem, not_found
from timbra_shared.ids import utcnow

MAX_CERT_BYTES = 64 * 1024
Placement = Literal["left", "center", "right"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IssuerIn(Body):
    rfc: str = Field(min_length=12, max_length=16)
    legal_name: str = Field(min_length=1, max_length=300)
    tax_regime: str = Field(pattern=r"^\d{3}$")
    zip: str = Field(pattern=r"^\d{5}$")
    email: str | None = None
    phone: str | None = Field(default=None, max_length=30)


class FiscalDataIn(Body):
    rfc: str | None = Field(default=None, min_length=12, max_length=16)
    legal_name: str | None = Field(default=None, min_length=1, max_length=300)
    tax_regime: str | None = Field(default=None, pattern=r"^\d{3}$")
    zip: str | None = Field(default=None, pattern=r"^\d{5}$", description="Lugar de expedición (c_CodigoPostal)")
    phone: str | None = Field(default=None, max_length=30)
    email: str | None = Field(default=None, max_length=254)


class AcceptancesIn(Body):
    privacy_notice: bool = False
    carta_manifiesto: bool = False


class AddressIn(Body):
    street: str = Field(default="", max_length=200, description="Calle")
    exterior: str = Field(default="", max_length=40, description="No. exterior")
    interior: str | None = Field(default=None, max_length=40, description="No. interior")
    neighborhood: str | None = Field(default=None, max_length=120, description="Colonia")
    zip: str = Field(default="", max_length=10, description="Código postal")
    reference: str | None = Field(default=None, max_length=200, description="Referencia")
    locality: str | None = Field(default=None, max_length=120, description="Localidad")
    municipality: str = Field(default="", max_length=120, description="Municipio")
    state: str = Field(default="", max_length=120, description="Estado")
    country: str = Field(default="MEX", max_length=3, description="País (c_Pais)")


class AddressesIn(Body):
    fiscal: AddressIn | None = None
    issuing: AddressIn | None = None
    issuing_same_as_fiscal: bool = Field(default=False, description="copy the fiscal address as the issuing address")


class DocumentTypesIn(Body):
    enabled_types: list[str] = Field(max_length=4)


class SeriesIn(Body):
    series: dict[str, str | None] = Field(description="type (I, E, T, P) → serie; null removes it")


class UserIn(Body):
    name: str = Field(max_length=200)
    email: str = Field(max_length=254)
    alt_email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=30)
    initials: str | None = Field(default=None, max_length=5)
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)
    password_confirmation: str | None = Field(default=None, max_length=256)
    role: str | None = None


class UserPatch(Body):
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=254)
    alt_email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=30)
    initials: str | None = Field(default=None, max_length=5)
    role: str | None = None
    password: str | None = Field(default=None, max_length=256)
    password_confirmation: str | None = Field(default=None, max_length=256)


class LoginIn(Body):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)


class KeyIn(Body):
    livemode: bool = False
    name: str | None = Field(default=None, max_length=100)


class StaffKeyIn(Body):
    role: str
    name: str | None = Field(default=None, max_length=100)


class SmtpIn(Body):
    address: str = Field(max_length=254, description="Dirección de correo electrónico (remitente)")
    sender_name: str | None = Field(default=None, max_length=100)
    username: str | None = Field(default=None, max_length=254)
    password: str | None = Field(default=None, max_length=256, description="write-only; omit to keep the saved one")
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    security: Literal["ssl", "starttls", "none"] = "starttls"


class PlacementIn(Body):
    placement: Placement


class ExchangeIn(BaseModel):
    key: str


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def present_issuer(issuer: dict[str, Any], csd: CsdStatus | None, expiry: CsdStatus | None = None, users: int = 0) -> dict[str, Any]:
    now = utcnow()
    acceptances = issuer.get("acceptances", {})
    smtp = issuer.get("smtp")
    logo = issuer.get("logo")
    notice = (expiry or csd).notice(now) if (expiry or csd) else None
    warnings = [m.message for m in missing_acceptances(acceptances)]
    if csd is None:
        warnings.append("Aún no has cargado tu certificado de sello digital (CSD).")
    elif (expiry or csd).warning(now):
        warnings.append((expiry or csd).warning(now))
    return {
        "id": issuer["_id"],
        "code": issuer["slug"],
        "rfc": issuer["rfc"],
        "legal_name": issuer["legal_name"],
        "tax_regime": issuer["tax_regime"],
        "zip": issuer["zip"],
        "email": issuer.get("email"),
        "phone": issuer.get("phone"),
        "slug": issuer["slug"],
        "fiscal_address": issuer.get("fiscal_address"),
        "issuing_address": issuer.get("issuing_address"),
        "issuing_same_as_fiscal": issuer.get("issuing_same_as_fiscal", False),
        "enabled_types": issuer.get("enabled_types"),
        "series": issuer.get("series", {}),
        "acceptances": {name: {"accepted_at": v["accepted_at"].isoformat(), "by": v.get("by")} for name, v in acceptances.items()},
        "csd": None if csd is None else {
            "serial": csd.serial,
            "valid_from": csd.valid_from.isoformat(),
            "valid_to": csd.valid_to.isoformat(),
            "days_left": csd.days_left(now),
            "expires_at": csd.valid_to.isoformat(),
        },
        "logo": None if not logo else {k: logo[k] for k in ("id", "content_type", "width", "height", "size", "placement")} | {"url": "/v1/issuers/me/logo"},
        "smtp": present_smtp(smtp),
        "notices": [notice] if notice else [],
        "warnings": warnings,
        "onboarding": {
            "acceptances": not missing_acceptances(acceptances),
            "fiscal_data": bool(issuer.get("phone")),
            "addresses": bool(issuer.get("fiscal_address") and issuer.get("issuing_address")),
            "user": users > 0,
            "logo": bool(logo),
            "csd": csd is not None,
            "smtp": bool(smtp),
            "document_types": bool(issuer.get("enabled_types")),
        },
        "version": issuer["version"],
    }


def present_smtp(smtp: dict[str, Any] | None) -> dict[str, Any] | None:
    if not smtp:
        return None
    last = smtp.get("last_test")
    return {
        "address": smtp["address"],
        "sender_name": smtp.get("sender_name"),
        "username": smtp.get("username"),
        "host": smtp["host"],
        "port": smtp["port"],
        "security": smtp["security"],
        "password_set": bool(smtp.get("password")),
        "last_test": None if not last else {"ok": last["ok"], "code": last["code"], "at": _iso(last["at"])},
    }


def present_user(user: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": user["_id"],
        "name": user["name"],
        "email": user["email"],
        "alt_email": user.get("alt_email"),
        "phone": user.get("phone"),
        "initials": user.get("initials"),
        "username": user["username"],
        "role": user["role"],
        "created_at": _iso(user.get("created_at")),
        "last_login_at": _iso(user.get("last_login_at")),
        "disabled": bool(user.get("disabled_at")),
    }


def present_key(key: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": key["_id"],
        "name": key.get("name"),
        "prefix": key["prefix"],
        "last4": key.get("last4"),
        "livemode": key["livemode"],
        "role": key.get("role"),
        "created_at": _iso(key["created_at"]),
        "last_used_at": _iso(key.get("last_used_at")),
        "revoked_at": _iso(key.get("revoked_at")),
        "active": key.get("revoked_at") is None,
    }


def build_api(service: IssuerService, internal_secret: str) -> APIRouter:
    router = APIRouter(tags=["issuers"])

    def internal(secret: str) -> None:
        if not secret or not hmac.compare_digest(secret.encode(), internal_secret.encode()):
            raise ApiError(403, "forbidden", "Solo para uso interno.")

    async def profile_of(issuer_id: str) -> dict[str, Any]:
        issuer = await service.profile(issuer_id)
        if issuer is None:
            raise not_found("Emisor")
        users = len(await service.users(issuer_id))
        return present_issuer(issuer, await service.csd_status(issuer_id), await service.expiry_status(issuer_id), users)

    IssuerP = Annotated[Principal, Depends(issuer_principal)]
    AnyP = Annotated[Principal, Depends(current_principal)]

    # ---------------------------------------------------------------- issuers and onboarding

    @router.post("/v1/issuers", status_code=201)
    async def create_issuer(body: IssuerIn, principal: AnyP, request: Request) -> dict[str, Any]:
        require_roles(principal, "admin")
        issuer, key = await service.create_issuer(
            rfc=body.rfc, legal_name=body.legal_name, tax_regime=body.tax_regime, zip_code=body.zip, email=body.email, phone=body.phone,
            actor=await service.actor(principal, request.headers.get("user-agent")),
        )
        return {"id": issuer["_id"], "slug": issuer["slug"], "api_key": key, "livemode": False}

    @router.get("/v1/issuers/me")
    async def me(principal: IssuerP) -> dict[str, Any]:
        assert principal.issuer_id
        return await profile_of(principal.issuer_id)

    @router.patch("/v1/issuers/me")
    async def update_fiscal_data(body: FiscalDataIn, principal: IssuerP) -> dict[str, Any]:
        assert principal.issuer_id
        fields = body.model_dump(exclude_unset=True)
        if not fields:
            raise ApiError(422, "TIMBRA_NOTHING_TO_CHANGE", "No indicaste ningún dato por cambiar.")
        required = [Problem("TIMBRA_VALIDATION", f"{k}: No puede quedar vacío.", path=k) for k in ("rfc", "legal_name", "tax_regime", "zip") if k in fields and fields[k] is None]
        if required:
            raise ApiError(422, "invalid_request", required[0].message if len(required) == 1 else f"La solicitud tiene {len(required)} errores.", required)
        await service.update_fiscal_data(principal.issuer_id, fields)
        return await profile_of(principal.issuer_id)

    @router.put("/v1/issuers/me/acceptances")
    async def acceptances(body: AcceptancesIn, principal: IssuerP, request: Request) -> dict[str, Any]:
        assert principal.issuer_id
        await service.set_acceptances(principal.issuer_id, body.model_dump(), actor=await service.actor(principal, request.headers.get("user-agent")))
        return await profile_of(principal.issuer_id)

    @router.put("/v1/issuers/me/addresses")
    async def addresses(body: AddressesIn, principal: IssuerP) -> dict[str, Any]:
        assert principal.issuer_id
        await service.set_addresses(
            principal.issuer_id,
            body.fiscal.model_dump() if body.fiscal else None,
            body.issuing.model_dump() if body.issuing else None,
            body.issuing_same_as_fiscal,
        )
        return await profile_of(principal.issuer_id)

    @router.put("/v1/issuers/me/document-types")
    async def document_types(body: DocumentTypesIn, principal: IssuerP) -> dict[str, Any]:
        assert principal.issuer_id
        await service.set_document_types(principal.issuer_id, body.enabled_types)
        return await profile_of(principal.issuer_id)

    @router.put("/v1/issuers/me/series")
    async def series(body: SeriesIn, principal: IssuerP) -> dict[str, Any]:
        assert principal.issuer_id
        await service.set_series(principal.issuer_id, body.series)
        return await profile_of(principal.issuer_id)

    # ---------------------------------------------------------------- CSD

    @router.put("/v1/issuers/me/csd")
    async def upload_csd(
        principal: IssuerP,
        cer: Annotated[UploadFile, File(description="Certificado .cer (DER)")],
        key: Annotated[UploadFile, File(description="Llave privada .key (PKCS#8 DER cifrada)")],
        password: Annotated[str, Form(description="Contraseña de la llave privada")],
    ) -> dict[str, Any]:
        assert principal.issuer_id
        cer_bytes, key_bytes = await cer.read(MAX_CERT_BYTES + 1), await key.read(MAX_CERT_BYTES + 1)
        if len(cer_bytes) > MAX_CERT_BYTES or len(key_bytes) > MAX_CERT_BYTES:
            raise ApiError(413, "TIMBRA_FILE_TOO_LARGE", "El archivo .cer o .key es demasiado grande para ser un CSD.")
        return await service.upload_csd(principal.issuer_id, cer_bytes, key_bytes, password)

    @router.get("/v1/issuers/me/csds")
    async def list_csds(principal: IssuerP) -> dict[str, Any]:
        assert principal.issuer_id
        return {"data": await service.csds(principal.issuer_id)}

    @router.delete("/v1/issuers/me/csds/{serial}")
    async def delete_csd(serial: str, principal: IssuerP) -> dict[str, Any]:
        assert principal.issuer_id
        await service.delete_csd(principal.issuer_id, serial)
        return {"serial": serial, "deleted": True}

    # ---------------------------------------------------------------- logo

    @router.put("/v1/issuers/me/logo")
    async def upload_logo(
        principal: IssuerP,
        file: Annotated[UploadFile, File(description="Logotipo JPG o PNG")],
        placement: Annotated[Placement | None, Form(description="left, center o right")] = None,
    ) -> dict[str, Any]:
        assert principal.issuer_id
        data = await file.read(MAX_LOGO_BYTES + 1)
        await service.set_logo(principal.issuer_id, data, placement)
        return (await profile_of(principal.issuer_id))["logo"]

    @router.put("/v1/issuers/me/logo/placement")
    async def logo_placement(body: PlacementIn, principal: IssuerP) -> dict[str, Any]:
        assert principal.issuer_id
        await service.set_logo_placement(principal.issuer_id, body.placement)
        return (await profile_of(principal.issuer_id))["logo"]

    @router.get("/v1/issuers/me/logo")
    async def my_logo(principal: IssuerP) -> Response:
        assert principal.issuer_id
        logo = await service.logo(principal.issuer_id)
        if logo is None:
            raise not_found("Logotipo")
        return Response(logo["data"], media_type=logo["content_type"], headers={"Cache-Control": "private, max-age=300"})

    @router.delete("/v1/issuers/me/logo")
    async def delete_logo(principal: IssuerP) -> dict[str, Any]:
        assert principal.issuer_id
        await service.delete_logo(principal.issuer_id)
        return {"deleted": True}

    # ---------------------------------------------------------------- SMTP

    @router.put("/v1/issuers/me/smtp")
    async def set_smtp(body: SmtpIn, principal: IssuerP) -> dict[str, Any]:
        assert principal.issuer_id
        issuer = await service.set_smtp(principal.issuer_id, body.model_dump())
        return present_smtp(issuer.get("smtp")) or {}

    @router.get("/v1/issuers/me/smtp")
    async def get_smtp(principal: IssuerP) -> dict[str, Any]:
        assert principal.issuer_id
        issuer = await service.profile(principal.issuer_id)
        return {"configured": bool(issuer and issuer.get("smtp")), "settings": present_smtp((issuer or {}).get("smtp"))}

    @router.delete("/v1/issuers/me/smtp")
    async def delete_smtp(principal: IssuerP) -> dict[str, Any]:
        assert principal.issuer_id
        await service.delete_smtp(principal.issuer_id)
        return {"configured": False}

    @router.post("/v1/issuers/me/smtp/test")
    async def test_smtp(principal: IssuerP, body: SmtpIn | None = None) -> dict[str, Any]:
        assert principal.issuer_id
        result = await service.test_smtp(principal.issuer_id, body.model_dump() if body else None)
        if not result.ok:
            raise ApiError(422, result.code, result.message)
        return {"ok": True, "code": result.code, "message": result.message}

    # ---------------------------------------------------------------- users

    @router.post("/v1/issuers/me/users", status_code=201)
    async def create_user(body: UserIn, principal: IssuerP) -> dict[str, Any]:
        assert principal.issuer_id
        return present_user(await service.create_user(principal.issuer_id, body.model_dump(exclude_none=True)))

    @router.get("/v1/issuers/me/users")
    async def list_users(principal: IssuerP) -> dict[str, Any]:
        return {"data": [present_user(u) for u in await service.users(principal.issuer_id)]}

    @router.get("/v1/issuers/me/users/{user_id}")
    async def get_user(user_id: str, principal: IssuerP) -> dict[str, Any]:
        return present_user(await service.user(principal.issuer_id, user_id))

    @router.patch("/v1/issuers/me/users/{user_id}")
    async def update_user(user_id: str, body: UserPatch, principal: IssuerP) -> dict[str, Any]:
        return present_user(await service.update_user(principal.issuer_id, user_id, body.model_dump(exclude_unset=True)))

    @router.delete("/v1/issuers/me/users/{user_id}")
    async def disable_user(user_id: str, principal: IssuerP) -> dict[str, Any]:
        return present_user(await service.disable_user(principal.issuer_id, user_id))

    # ---------------------------------------------------------------- API keys

    @router.post("/v1/issuers/me/keys", status_code=201)
    async def create_key(body: KeyIn, principal: IssuerP, request: Request) -> dict[str, Any]:
        assert principal.issuer_id
        doc, key = await service.create_key(principal.issuer_id, livemode=body.livemode, name=body.name, actor=await service.actor(principal, request.headers.get("user-agent")))
        return present_key(doc) | {"key": key}

    @router.get("/v1/issuers/me/keys")
    async def list_keys(principal: IssuerP) -> dict[str, Any]:
        return {"data": [present_key(k) for k in await service.keys(principal.issuer_id)]}

    @router.delete("/v1/issuers/me/keys/{key_id}")
    async def revoke_key(key_id: str, principal: IssuerP) -> dict[str, Any]:
        return present_key(await service.revoke_key(key_id, issuer_id=principal.issuer_id))

    @router.post("/v1/issuers/{issuer_id}/keys", status_code=201)
    async def admin_create_key(issuer_id: str, body: KeyIn, principal: AnyP, request: Request) -> dict[str, Any]:
        require_roles(principal, "admin")
        doc, key = await service.create_key(issuer_id, livemode=body.livemode, name=body.name, actor=await service.actor(principal, request.headers.get("user-agent")))
        return present_key(doc) | {"key": key}

    # ---------------------------------------------------------------- sessions (panel and console login)

    @router.post("/v1/sessions", status_code=201)
    async def login(body: LoginIn) -> dict[str, Any]:
        result = await service.login(body.username, body.password)
        return {"token": result["token"], "expires_at": result["expires_at"].isoformat(), "user": present_user(result["user"])}

    @router.delete("/v1/sessions/current")
    async def logout(principal: AnyP) -> dict[str, Any]:
        if not principal.key_id or not principal.key_id.startswith("ses_"):
            raise ApiError(409, "TIMBRA_NOT_A_SESSION", "Esta llave no es una sesión; revoca las llaves de API en /v1/issuers/me/keys.")
        await service.logout(principal.key_id)
        return {"ok": True}

    # ---------------------------------------------------------------- staff (admin)

    @router.post("/v1/staff/users", status_code=201)
    async def create_staff_user(body: UserIn, principal: AnyP) -> dict[str, Any]:
        require_roles(principal, "admin")
        return present_user(await service.create_user(None, body.model_dump(exclude_none=True)))

    @router.get("/v1/staff/users")
    async def list_staff_users(principal: AnyP) -> dict[str, Any]:
        require_roles(principal, "admin")
        return {"data": [present_user(u) for u in await service.users(None)]}

    @router.post("/v1/staff/keys", status_code=201)
    async def create_staff_key(body: StaffKeyIn, principal: AnyP) -> dict[str, Any]:
        require_roles(principal, "admin")
        doc, key = await service.create_staff_key(role=body.role, name=body.name, actor=await service.actor(principal))
        return present_key(doc) | {"key": key}

    @router.get("/v1/staff/keys")
    async def list_staff_keys(principal: AnyP) -> dict[str, Any]:
        require_roles(principal, "admin")
        return {"data": [present_key(k) for k in await service.keys(None, staff=True)]}

    @router.delete("/v1/staff/keys/{key_id}")
    async def revoke_staff_key(key_id: str, principal: AnyP) -> dict[str, Any]:
        require_roles(principal, "admin")
        return present_key(await service.revoke_key(key_id, issuer_id=None, staff=True))

    # ---------------------------------------------------------------- internal

    @router.post("/internal/v1/auth/exchange", include_in_schema=False)
    async def exchange(body: ExchangeIn, secret: Annotated[str, Header(alias="x-timbra-internal")] = "") -> JSONResponse:
        internal(secret)
        token = await service.exchange(body.key)
        if token is None:
            raise ApiError(401, "unauthorized", "La llave de API no es válida o fue revocada.")
        return JSONResponse({"token": token})

    @router.get("/internal/v1/issuers/{issuer_id}/logo", include_in_schema=False)
    async def internal_logo(issuer_id: str, secret: Annotated[str, Header(alias="x-timbra-internal")] = "") -> Response:
        internal(secret)
        logo = await service.logo(issuer_id)
        if logo is None:
            raise not_found("Logotipo")
        return Response(logo["data"], media_type=logo["content_type"], headers={"ETag": f'"{logo["_id"]}"'})

    @router.get("/internal/v1/issuers/{issuer_id}/smtp", include_in_schema=False)
    async def internal_smtp(issuer_id: str, secret: Annotated[str, Header(alias="x-timbra-internal")] = "") -> JSONResponse:
        """The issuer's SMTP settings with the decrypted password, for the notifier only."""
        internal(secret)
        settings = await service.smtp_for_notifier(issuer_id)
        return JSONResponse({"configured": settings is not None, "settings": settings}, headers={"Cache-Control": "no-store"})

    @router.post("/internal/v1/csd-expiry/check", include_in_schema=False)
    async def check_expiry(secret: Annotated[str, Header(alias="x-timbra-internal")] = "", issuer_id: str | None = None) -> dict[str, Any]:
        internal(secret)
        sent = len(await service.check_expiry(issuer_id)) if issuer_id else await service.check_all_expiries()
        return {"notified": sent}

    return router
