"""HTTP routes owned by issuer-profile: issuers, acceptances, the CSD, and the internal key exchange."""

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from timbra_issuer_profile.service import IssuerService
from timbra_shared.auth import Principal, current_principal, issuer_principal, require_roles
from timbra_shared.errors import ApiError, not_found
from timbra_shared.ids import utcnow

MAX_CERT_BYTES = 64 * 1024


class IssuerIn(BaseModel):
    rfc: str = Field(min_length=12, max_length=16)
    legal_name: str = Field(min_length=1, max_length=300)
    tax_regime: str = Field(pattern=r"^\d{3}$")
    zip: str = Field(pattern=r"^\d{5}$")
    email: str | None = None


class AcceptancesIn(BaseModel):
    privacy_notice: bool = False
    carta_manifiesto: bool = False


class ExchangeIn(BaseModel):
    key: str


def present_issuer(issuer: dict[str, Any], csd: Any) -> dict[str, Any]:
    now = utcnow()
    acceptances = issuer.get("acceptances", {})
    return {
        "id": issuer["_id"],
        "rfc": issuer["rfc"],
        "legal_name": issuer["legal_name"],
        "tax_regime": issuer["tax_regime"],
        "zip": issuer["zip"],
        "email": issuer.get("email"),
        "slug": issuer["slug"],
        "enabled_types": issuer.get("enabled_types"),
        "acceptances": {name: {"accepted_at": v["accepted_at"].isoformat()} for name, v in acceptances.items()},
        "csd": None if csd is None else {
            "serial": csd.serial,
            "valid_from": csd.valid_from.isoformat(),
            "valid_to": csd.valid_to.isoformat(),
            "days_left": csd.days_left(now),
        },
        "warnings": [w for w in [csd.warning(now) if csd else "Aún no has cargado tu certificado de sello digital (CSD)."] if w],
    }


def build_api(service: IssuerService, internal_secret: str) -> APIRouter:
    router = APIRouter(tags=["issuers"])

    @router.post("/v1/issuers", status_code=201)
    async def create_issuer(body: IssuerIn, principal: Annotated[Principal, Depends(current_principal)]) -> dict[str, Any]:
        require_roles(principal, "admin")
        issuer, key = await service.create_issuer(rfc=body.rfc, legal_name=body.legal_name, tax_regime=body.tax_regime, zip_code=body.zip, email=body.email)
        return {"id": issuer["_id"], "slug": issuer["slug"], "api_key": key, "livemode": False}

    @router.get("/v1/issuers/me")
    async def me(principal: Annotated[Principal, Depends(issuer_principal)]) -> dict[str, Any]:
        assert principal.issuer_id
        issuer = await service.profile(principal.issuer_id)
        if issuer is None:
            raise not_found("Emisor")
        return present_issuer(issuer, await service.csd_status(principal.issuer_id))

    @router.put("/v1/issuers/me/acceptances")
    async def acceptances(body: AcceptancesIn, principal: Annotated[Principal, Depends(issuer_principal)]) -> dict[str, Any]:
        assert principal.issuer_id
        issuer = await service.set_acceptances(principal.issuer_id, body.model_dump(), actor=principal.key_id or "api")
        return present_issuer(issuer, await service.csd_status(principal.issuer_id))

    @router.put("/v1/issuers/me/csd")
    async def upload_csd(
        principal: Annotated[Principal, Depends(issuer_principal)],
        cer: Annotated[UploadFile, File(description="Certificado .cer (DER)")],
        key: Annotated[UploadFile, File(description="Llave privada .key (PKCS#8 DER cifrada)")],
        password: Annotated[str, Form(description="Contraseña de la llave privada")],
    ) -> dict[str, Any]:
        assert principal.issuer_id
        cer_bytes, key_bytes = await cer.read(MAX_CERT_BYTES + 1), await key.read(MAX_CERT_BYTES + 1)
        if len(cer_bytes) > MAX_CERT_BYTES or len(key_bytes) > MAX_CERT_BYTES:
            raise ApiError(413, "TIMBRA_FILE_TOO_LARGE", "El archivo .cer o .key es demasiado grande para ser un CSD.")
        return await service.upload_csd(principal.issuer_id, cer_bytes, key_bytes, password)

    @router.post("/internal/v1/auth/exchange", include_in_schema=False)
    async def exchange(body: ExchangeIn, secret: Annotated[str, Header(alias="x-timbra-internal")] = "") -> JSONResponse:
        if not hmac.compare_digest(secret.encode(), internal_secret.encode()):
            raise ApiError(403, "forbidden", "Solo para uso interno.")
        token = await service.exchange(body.key)
        if token is None:
            raise ApiError(401, "unauthorized", "La llave de API no es válida o fue revocada.")
        return JSONResponse({"token": token})

    return router
