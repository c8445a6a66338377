"""HTTP routes owned by the catalog service: SAT catalog search."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from timbra_shared.auth import Principal, current_principal
from timbra_shared.cfdi import catalogs
from timbra_shared.errors import ApiError

PUBLIC_NAMES = {
    "product_keys": "c_ClaveProdServ",
    "unit_keys": "c_ClaveUnidad",
    "zip_codes": "c_CodigoPostal",
    "tax_regimes": "c_RegimenFiscal",
    "uses": "c_UsoCFDI",
    "payment_forms": "c_FormaPago",
    "currencies": "c_Moneda",
}


def build_api() -> APIRouter:
    router = APIRouter(prefix="/v1/catalogs", tags=["catalogs"])

    @router.get("/{catalog}")
    async def search_catalog(
        catalog: str,
        _principal: Annotated[Principal, Depends(current_principal)],
        q: str = "",
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> dict[str, Any]:
        name = PUBLIC_NAMES.get(catalog)
        if name is None:
            raise ApiError(404, "not_found", f"Catálogo desconocido: {catalog}. Disponibles: {', '.join(PUBLIC_NAMES)}.")
        return {"data": [{"code": code, "description": description} for code, description in catalogs.search(name, q, limit)]}

    return router
