"""HTTP routes owned by the catalog service: customers, products, SAT catalog search, branches,
store tickets and the global invoice."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response

from timbra_catalog.service import CatalogService, present_branch, present_customer, present_product, present_ticket
from timbra_shared.auth import Principal, current_principal, issuer_principal
from timbra_shared.errors import ApiError
from timbra_shared.events import TicketIn

PUBLIC_NAMES = {
    "product_keys": "c_ClaveProdServ",
    "unit_keys": "c_ClaveUnidad",
    "zip_codes": "c_CodigoPostal",
    "tax_regimes": "c_RegimenFiscal",
    "uses": "c_UsoCFDI",
    "payment_forms": "c_FormaPago",
    "currencies": "c_Moneda",
}

Issuer = Annotated[Principal, Depends(issuer_principal)]
Page = Annotated[int, Query(ge=1, le=100_000)]
Limit = Annotated[int, Query(ge=1, le=100)]
MAX_CSV_BYTES = 5 * 1024 * 1024


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(422, "TIMBRA_BODY_INVALID", "El cuerpo debe ser un objeto JSON.")
    return body


async def _csv_text(request: Request) -> str:
    """A CSV upload: multipart (field ``file``) or the raw body (text/csv)."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(422, "TIMBRA_CSV_REQUIRED", "Envía el archivo CSV en el campo file.")
        raw = await upload.read()
    else:
        raw = await request.body()
    if len(raw) > MAX_CSV_BYTES:
        raise ApiError(413, "TIMBRA_CSV_TOO_LARGE", "El archivo CSV excede 5 MB.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # spreadsheets exported on Windows


def build_api(service: CatalogService) -> APIRouter:
    search = APIRouter(prefix="/v1/catalogs", tags=["catalogs"])

    @search.get("/{catalog}")
    async def search_catalog(
        catalog: str,
        _principal: Annotated[Principal, Depends(current_principal)],
        q: str = "",
        limit: Limit = 20,
    ) -> dict[str, Any]:
        name = PUBLIC_NAMES.get(catalog)
        if name is None:
            raise ApiError(404, "not_found", f"Catálogo desconocido: {catalog}. Disponibles: {', '.join(PUBLIC_NAMES)}.")
        return {"data": [{"code": code, "description": description} for code, description in service.catalog_search.search(name, q, limit)]}

    root = APIRouter()
    root.include_router(search)
    for kind, plural, show in (("customer", "customers", present_customer), ("product", "products", present_product)):
        root.include_router(_entity_router(service, kind, plural, show))
    root.include_router(_branch_router(service))
    root.include_router(_ticket_router(service))
    return root


def _entity_router(service: CatalogService, kind: str, plural: str, show: Any) -> APIRouter:
    router = APIRouter(prefix=f"/v1/{plural}", tags=[plural])

    @router.post("", status_code=201, name=f"create_{kind}")
    async def create_entity(principal: Issuer, body: Annotated[Any, Body()]) -> dict[str, Any]:
        return show(await getattr(service, f"create_{kind}")(principal, _object(body)))

    @router.post("/import", name=f"import_{plural}")
    async def import_entities(principal: Issuer, request: Request) -> dict[str, Any]:
        return await service.import_csv(principal, kind, await _csv_text(request))

    @router.get("", name=f"list_{plural}")
    async def list_entities(principal: Issuer, q: str | None = None, page: Page = 1, limit: Limit = 50) -> dict[str, Any]:
        return await service.page(principal, kind, q=q, page=page, limit=limit)

    @router.get("/{entity_id}", name=f"get_{kind}")
    async def get_entity(entity_id: str, principal: Issuer) -> dict[str, Any]:
        return show(await service.get(principal, kind, entity_id))

    @router.put("/{entity_id}", name=f"update_{kind}")
    async def update_entity(entity_id: str, principal: Issuer, body: Annotated[Any, Body()]) -> dict[str, Any]:
        return show(await getattr(service, f"update_{kind}")(principal, entity_id, _object(body)))

    @router.delete("/{entity_id}", name=f"delete_{kind}")
    async def delete_entity(entity_id: str, principal: Issuer) -> dict[str, Any]:
        return show(await service.delete(principal, kind, entity_id))

    return router


def _branch_router(service: CatalogService) -> APIRouter:
    router = APIRouter(prefix="/v1/branches", tags=["branches"])

    @router.post("", status_code=201)
    async def create_branch(principal: Issuer, body: Annotated[Any, Body()]) -> dict[str, Any]:
        return present_branch(await service.create_branch(principal, _object(body)))

    @router.get("")
    async def list_branches(principal: Issuer, q: str | None = None, page: Page = 1, limit: Limit = 50) -> dict[str, Any]:
        return await service.page(principal, "branch", q=q, page=page, limit=limit)

    @router.get("/{branch_id}")
    async def get_branch(branch_id: str, principal: Issuer) -> dict[str, Any]:
        return present_branch(await service.get(principal, "branch", branch_id))

    @router.put("/{branch_id}")
    async def update_branch(branch_id: str, principal: Issuer, body: Annotated[Any, Body()]) -> dict[str, Any]:
        return present_branch(await service.update_branch(principal, branch_id, _object(body)))

    @router.post("/{branch_id}/global-invoice", status_code=202)
    async def global_invoice(branch_id: str, principal: Issuer, body: Annotated[Any, Body()]) -> dict[str, Any]:
        return await service.global_invoice(principal, branch_id, _object(body))

    return router


def _ticket_router(service: CatalogService) -> APIRouter:
    router = APIRouter(prefix="/v1/tickets", tags=["tickets"])

    @router.get("/settings")
    async def ticket_settings(principal: Issuer) -> dict[str, Any]:
        return await service.settings(principal)

    @router.put("/settings")
    async def save_ticket_settings(principal: Issuer, body: Annotated[Any, Body()]) -> dict[str, Any]:
        return await service.save_settings(principal, _object(body))

    @router.post("", status_code=201)
    async def create_ticket(principal: Issuer, ticket: Annotated[TicketIn, Body()], response: Response) -> dict[str, Any]:
        assert principal.issuer_id
        doc, created = await service.submit_ticket(principal.issuer_id, ticket)
        if not created:
            response.status_code = 200
        return present_ticket(doc)

    @router.get("")
    async def list_tickets(principal: Issuer, branch_id: str | None = None, status: str | None = None, q: str | None = None, page: Page = 1, limit: Limit = 50) -> dict[str, Any]:
        filters = {k: v for k, v in (("branch_id", branch_id), ("status", status)) if v}
        return await service.page(principal, "ticket", q=q, page=page, limit=limit, filters=filters)

    @router.get("/{ticket_id}")
    async def get_ticket(ticket_id: str, principal: Issuer) -> dict[str, Any]:
        return present_ticket(await service.get(principal, "ticket", ticket_id))

    return router

