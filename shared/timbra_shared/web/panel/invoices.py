"""The new invoice (seed 000, pasos 1–16) and the invoice records ("Registros CFDI": search,
downloads, resend, cancellation with the guided substitution for motive 01)."""

import secrets
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from timbra_shared.cfdi.xmlparse import parse_xml
from timbra_shared.web.core import STATUS_ES, ApiFailure, errors_by_field
from timbra_shared.web.panel.catalogs import TAX_CHOICES, TAXABILITY, choice_from_taxes, sat_options, taxes_from_choice
from timbra_shared.web.panel.common import api_of, checked_form, form_text, fragment, page, session_of, web_of
from timbra_shared.web.panel.setup import preview_images

router = APIRouter()

ITEM_FIELDS = ("product_id", "sku", "description", "product_key", "unit_key", "unit_name", "price", "quantity", "discount", "taxability", "tax", "taxes_json", "tax_included")
RELATIONSHIPS = [
    ("01", "01 - Nota de crédito de los documentos relacionados"),
    ("02", "02 - Nota de débito de los documentos relacionados"),
    ("03", "03 - Devolución de mercancía sobre facturas o traslados previos"),
    ("04", "04 - Sustitución de los CFDI previos"),
    ("05", "05 - Traslados de mercancías facturados previamente"),
    ("06", "06 - Factura generada por los traslados previos"),
    ("07", "07 - CFDI por aplicación de anticipo"),
]
CANCELLATION_ES = {
    "awaiting_substitute": "Timbrando la factura sustituta",
    "requested": "Solicitada",
    "pending": "En proceso (esperando la respuesta del receptor)",
    "completed": "Cancelada",
    "rejected": "Rechazada",
    "escalated": "En revisión por soporte",
}
MOTIVES = [
    ("02", "02 - Comprobante emitido con errores sin relación"),
    ("01", "01 - Comprobante emitido con errores con relación (se sustituye por otro)"),
    ("03", "03 - No se llevó a cabo la operación"),
    ("04", "04 - Operación nominativa relacionada en una factura global"),
]
STAMPED = {"stamped", "rendered", "emailed"}
LISTED_STATUSES = ("requested", "built", "sealed", "funded", "stamped", "rendered", "emailed", "rejected", "stamp_failed", "canceled")
FINAL = {"emailed", "rejected", "stamp_failed", "canceled"}
FOREIGN_RFC = "XEXX010101000"
CFDI = "{http://www.sat.gob.mx/cfd/4}"


# ---------------------------------------------------------------------- the draft (form <-> API body)

def empty_item(**values: Any) -> dict[str, Any]:
    item = {k: "" for k in ITEM_FIELDS}
    item.update(quantity="1", discount="0", taxability="02", tax="iva16", tax_included="")
    item.update({k: ("" if v is None else v) for k, v in values.items()})
    return item


def item_from_product(product: dict[str, Any]) -> dict[str, Any]:
    import json

    return empty_item(
        product_id=product.get("id", ""), sku=product.get("sku") or "", description=product.get("description", ""),
        product_key=product.get("product_key", ""), unit_key=product.get("unit_key", ""), unit_name=product.get("unit_name") or "",
        price=str(product.get("price", "")), taxability=product.get("taxability") or "02", tax=choice_from_taxes(product.get("taxes")),
        taxes_json=json.dumps(product.get("taxes") or []), tax_included="1" if product.get("tax_included") else "",
    )


def draft_from_form(form: Any) -> dict[str, Any]:
    lists = {name: form.getlist(f"item_{name}") for name in ITEM_FIELDS}
    count = max((len(v) for v in lists.values()), default=0)
    items = [{name: (str(lists[name][i]).strip() if i < len(lists[name]) else "") for name in ITEM_FIELDS} for i in range(count)]
    draft = {k: form_text(form, k) for k in (
        "type", "customer_id", "use", "payment_method", "payment_form", "currency", "exchange", "conditions", "notes",
        "related_relationship", "related_uuids", "tax_id", "tax_residence", "idempotency_key", "emails", "substitutes",
    )}
    draft["type"] = draft["type"] or "I"
    draft["currency"] = (draft["currency"] or "MXN").upper()
    draft["items"] = items
    return draft


def _product(item: dict[str, Any]) -> dict[str, Any]:
    import json

    if item["tax"] == "catalog" and item.get("taxes_json"):
        try:
            taxes = json.loads(item["taxes_json"])
        except ValueError:
            taxes = []
    else:
        taxes = taxes_from_choice(item["tax"])
    product: dict[str, Any] = {
        "description": item["description"], "product_key": item["product_key"], "unit_key": item["unit_key"],
        "price": item["price"] or "0", "taxability": item["taxability"] or "02", "taxes": taxes,
        "tax_included": bool(item.get("tax_included")),
    }
    if item.get("sku"):
        product["sku"] = item["sku"]
    if item.get("unit_name"):
        product["unit_name"] = item["unit_name"]
    return product


def request_body(draft: dict[str, Any], customer: dict[str, Any] | None, *, inline_customer: bool) -> dict[str, Any]:
    """The ``POST /v1/invoices`` body. Stamping names the catalog customer (``customer_id``), so the
    catalog remembers its Uso CFDI; previews need it inline."""
    body: dict[str, Any] = {
        "type": draft["type"],
        "use": draft["use"] or None,
        "payment_form": draft["payment_form"] or None,
        "payment_method": draft["payment_method"] or None,
        "currency": draft["currency"],
        "conditions": draft["conditions"] or None,
        "notes": draft["notes"] or None,
        "items": [{"product": _product(i), "quantity": i["quantity"] or "1", "discount": i["discount"] or "0"} for i in draft["items"]],
    }
    if draft.get("exchange"):
        body["exchange"] = draft["exchange"]
    uuids = [u.strip().upper() for u in draft.get("related_uuids", "").replace(",", "\n").split() if u.strip()]
    if uuids:
        body["related"] = [{"relationship": draft.get("related_relationship") or "04", "uuids": uuids}]
    emails = [e.strip() for e in draft.get("emails", "").replace(";", ",").split(",") if e.strip()]
    if emails:
        body["emails"] = emails
    if inline_customer:
        source = customer or {"rfc": "XAXX010101000", "legal_name": "PUBLICO EN GENERAL", "tax_regime": "616", "zip": "00000"}
        body["customer"] = {
            "rfc": source["rfc"], "legal_name": source["legal_name"], "tax_regime": source["tax_regime"], "zip": source.get("zip") or "00000",
            **({"tax_id": draft["tax_id"] or source.get("tax_id")} if (draft["tax_id"] or source.get("tax_id")) else {}),
            **({"tax_residence": draft["tax_residence"] or source.get("tax_residence")} if (draft["tax_residence"] or source.get("tax_residence")) else {}),
        }
    elif draft["customer_id"]:
        body["customer_id"] = draft["customer_id"]
    if draft.get("idempotency_key"):
        body["idempotency_key"] = draft["idempotency_key"]
    return {k: v for k, v in body.items() if v is not None}


def new_draft(**values: Any) -> dict[str, Any]:
    draft = {"type": "I", "customer_id": "", "use": "", "payment_method": "PUE", "payment_form": "03", "currency": "MXN", "exchange": "",
             "conditions": "", "notes": "", "related_relationship": "04", "related_uuids": "", "tax_id": "", "tax_residence": "", "emails": "",
             "substitutes": "", "items": []}
    draft.update(values)
    draft["idempotency_key"] = "panel-" + secrets.token_urlsafe(16)
    return draft


async def _customer(request: Request, customer_id: str) -> dict[str, Any] | None:
    if not customer_id:
        return None
    try:
        return await api_of(request).get(f"/v1/customers/{customer_id}")
    except ApiFailure as exc:
        if exc.status == 404:
            return None
        raise


async def _form_page(request: Request, draft: dict[str, Any], errors: dict[str, list[str]] | None = None, status: int = 200, **extra: Any) -> Response:
    customer = await _customer(request, draft.get("customer_id", ""))
    ctx = {
        "draft": draft, "customer": customer, "errors": errors or {}, "relationships": RELATIONSHIPS,
        "uses": await sat_options(request, "uses"), "payment_forms": await sat_options(request, "payment_forms"),
        "taxability": TAXABILITY, "tax_choices": TAX_CHOICES, "foreign_rfc": FOREIGN_RFC, **extra,
    }
    return await page(request, "panel/invoice_new.html", ctx, status=status)


# ---------------------------------------------------------------------- new invoice

@router.get("/facturas/nueva")
async def new_invoice(request: Request, sustituye: str = "", cliente: str = "") -> Response:
    session_of(request)
    draft = new_draft(customer_id=cliente)
    original = None
    if sustituye:
        original = await _invoice_with_xml(request, sustituye)
        if original.get("cfdi"):
            draft = draft_from_cfdi(original["cfdi"], draft)
            draft["related_relationship"], draft["related_uuids"], draft["substitutes"] = "04", original.get("uuid") or "", sustituye
    if draft["customer_id"]:
        customer = await _customer(request, draft["customer_id"])
        if customer and not draft["use"]:
            draft["use"] = customer.get("default_use") or ""
    return await _form_page(request, draft, original=original)


def draft_from_cfdi(cfdi: dict[str, Any], draft: dict[str, Any]) -> dict[str, Any]:
    """Prefill the substitute of a stamped invoice with its data (FAQ: "Primero haz la factura correcta")."""
    draft = dict(draft)
    for key in ("use", "payment_method", "payment_form", "currency", "conditions"):
        if cfdi.get(key):
            draft[key] = cfdi[key]
    draft["customer_id"] = draft.get("customer_id") or ""
    draft["items"] = [empty_item(**item) for item in cfdi.get("items", [])]
    return draft


@router.get("/facturas/cliente")
async def customer_section(request: Request, customer_id: str = "") -> Response:
    """The customer block after picking one from the search (paso 2–5)."""
    session_of(request)
    customer = await _customer(request, customer_id)
    draft = new_draft(customer_id=customer_id, use=(customer or {}).get("default_use") or "")
    if customer:
        draft["tax_id"], draft["tax_residence"] = customer.get("tax_id") or "", customer.get("tax_residence") or ""
    return fragment(request, "panel/_invoice_customer.html", {"draft": draft, "customer": customer, "errors": {}, "uses": await sat_options(request, "uses"), "foreign_rfc": FOREIGN_RFC})


@router.get("/buscar/clientes")
async def search_customers(request: Request, q: str = "", customer_q: str = "") -> Response:
    session_of(request)
    q = q or customer_q
    results = (await api_of(request).get("/v1/customers", q=q.strip() or None, limit=10))["data"] if q.strip() else []
    return fragment(request, "panel/_pick_customer.html", {"results": results})


@router.get("/buscar/productos")
async def search_products(request: Request, q: str = "", product_q: str = "") -> Response:
    session_of(request)
    q = q or product_q
    results = (await api_of(request).get("/v1/products", q=q.strip() or None, limit=10))["data"] if q.strip() else []
    return fragment(request, "panel/_pick_product.html", {"results": results})


@router.get("/facturas/concepto")
async def concept_row(request: Request, product_id: str = "") -> Response:
    """A concept row: from the catalog (paso 10.1) or empty for "Modo manual" (paso 10.2)."""
    session_of(request)
    item = item_from_product(await api_of(request).get(f"/v1/products/{product_id}")) if product_id else empty_item()
    return fragment(request, "panel/_invoice_item.html", {"item": item, "errors": {}, "index": None, "taxability": TAXABILITY, "tax_choices": TAX_CHOICES})


@router.post("/facturas/nueva/uso")
async def use_changed(request: Request) -> Response:
    """Paso 4: offer to keep the chosen Uso CFDI as the customer's default."""
    session_of(request)
    form = await checked_form(request)
    customer = await _customer(request, form_text(form, "customer_id"))
    use = form_text(form, "use")
    ask = bool(customer and use and use != (customer.get("default_use") or ""))
    return fragment(request, "panel/_use_default.html", {"ask": ask, "customer": customer, "use": use})


@router.post("/facturas/nueva/uso-default")
async def use_default(request: Request) -> Response:
    session_of(request)
    form = await checked_form(request)
    customer_id, use = form_text(form, "customer_id"), form_text(form, "use")
    try:
        await api_of(request).put(f"/v1/customers/{customer_id}", {"default_use": use})
    except ApiFailure as exc:
        return fragment(request, "panel/_use_default.html", {"ask": False, "error": exc.message})
    return fragment(request, "panel/_use_default.html", {"ask": False, "saved": use})


@router.post("/facturas/nueva/totales")
async def update_totals(request: Request) -> Response:
    """Paso 11, "Actualizar totales": the CFDI core computes the draft (``POST /v1/invoices/preview/xml``)."""
    session_of(request)
    draft = draft_from_form(await checked_form(request))
    if not draft["items"]:
        return fragment(request, "panel/_invoice_totals.html", {"totals": None, "errors": {"items": ["Agrega al menos un concepto."]}})
    customer = await _customer(request, draft["customer_id"])
    try:
        xml = await api_of(request).call("POST", "/v1/invoices/preview/xml", json=request_body(draft, customer, inline_customer=True))
    except ApiFailure as exc:
        return fragment(request, "panel/_invoice_totals.html", {"totals": None, "errors": errors_by_field(exc)})
    return fragment(request, "panel/_invoice_totals.html", {"totals": totals_of(xml), "errors": {}})


@router.post("/facturas/nueva/vista-previa")
async def preview(request: Request) -> Response:
    """Paso 12, "Visualizar factura": the PDF marked SIN VALIDEZ FISCAL."""
    session_of(request)
    draft = draft_from_form(await checked_form(request))
    customer = await _customer(request, draft["customer_id"])
    if customer is None:
        return fragment(request, "panel/_preview.html", {"error": "Elige el cliente antes de visualizar la factura."})
    try:
        pdf = await api_of(request).call("POST", "/v1/invoices/preview/pdf", json=request_body(draft, customer, inline_customer=True))
    except ApiFailure as exc:
        return fragment(request, "panel/_preview.html", {"error": "; ".join(m for msgs in errors_by_field(exc).values() for m in msgs)})
    return fragment(request, "panel/_preview.html", await preview_images(pdf, pages=2) | {"title": "Vista previa (sin validez fiscal)"})


@router.post("/facturas/nueva")
async def stamp(request: Request) -> Response:
    """Paso 16, "Timbrar": create the invoice and wait (bounded) for SAT's answer. A rejection comes
    back onto the form, each message next to the field at fault."""
    session_of(request)
    form = await checked_form(request)
    draft = draft_from_form(form)
    web, api = web_of(request), api_of(request)
    errors: dict[str, list[str]] = {}
    if not draft["customer_id"]:
        errors["customer"] = ["Elige el cliente (búscalo por nombre o RFC)."]
    if not draft["items"]:
        errors["items"] = ["Agrega al menos un concepto: del catálogo o en modo manual."]
    if errors:
        return await _form_page(request, draft, errors, status=422)
    customer = await _customer(request, draft["customer_id"])
    if customer and customer.get("rfc") == FOREIGN_RFC:
        changes = {k: draft[k] for k in ("tax_id", "tax_residence") if draft[k] and draft[k] != (customer.get(k) or "")}
        if changes:
            try:
                await api.put(f"/v1/customers/{customer['id']}", changes)
            except ApiFailure as exc:
                return await _form_page(request, draft, errors_by_field(exc), status=422)
    if draft.get("substitutes"):
        return await _substitute(request, draft, customer)
    try:
        result = await api.post("/v1/invoices", request_body(draft, customer, inline_customer=False), params={"wait": "true", "timeout": "25"})
    except ApiFailure as exc:
        draft["idempotency_key"] = new_draft()["idempotency_key"]
        return await _form_page(request, draft, errors_by_field(exc), status=422)
    if result["status"] in ("rejected", "stamp_failed"):
        draft["idempotency_key"] = new_draft()["idempotency_key"]  # the rejected one stays rejected
        return await _form_page(request, draft, errors_by_field(errors=result.get("errors") or [], message=result.get("message") or "SAT rechazó la factura."), status=422, rejected=result)
    target = f"{web.prefix}/facturas/{result['id']}?nueva=1"
    if draft.get("substitutes"):
        target += "&sustituye=" + quote(draft["substitutes"])
    return web.redirect(request, target)


async def _substitute(request: Request, draft: dict[str, Any], customer: dict[str, Any] | None) -> Response:
    """The guided substitution (motive 01): the cancellation service requests this corrected
    invoice (related 04 to the original) and cancels the original once it is stamped."""
    web = web_of(request)
    original = draft["substitutes"]
    changes = request_body(draft, customer, inline_customer=False)
    changes.pop("idempotency_key", None)
    changes.pop("related", None)  # the service relates it (04) to the original itself
    changes["customer"] = None  # the catalog customer replaces an inline one of the original
    try:
        result = await api_of(request).post(f"/v1/invoices/{original}/cancellation/substitution", {"changes": changes})
    except ApiFailure as exc:
        draft["idempotency_key"] = new_draft()["idempotency_key"]
        return await _form_page(request, draft, errors_by_field(exc), status=422, original=await _invoice_with_xml(request, original))
    substitute = (result.get("substitution") or {}).get("invoice_id")
    if not substitute:
        return web.redirect(request, f"{web.prefix}/facturas/{original}?sustitucion=1")
    return web.redirect(request, f"{web.prefix}/facturas/{substitute}?nueva=1&sustituye={quote(original)}")


def totals_of(xml: bytes) -> dict[str, Any]:
    """Totals, and each line with its taxes (paso 14: "Referencia partida – impuesto aplicado")."""
    root = parse_xml(xml)
    names = {"001": "ISR", "002": "IVA", "003": "IEPS"}
    lines = []
    for n, concepto in enumerate(root.iter(f"{CFDI}Concepto"), 1):
        taxes = []
        for kind, tag in (("Trasladado", "Traslado"), ("Retenido", "Retencion")):
            for tax in concepto.iter(f"{CFDI}{tag}"):
                rate = tax.get("TasaOCuota")
                taxes.append({"kind": kind, "name": names.get(tax.get("Impuesto", ""), tax.get("Impuesto")), "factor": tax.get("TipoFactor"),
                              "rate": f"{Decimal(rate) * 100:.2f} %" if rate else "Exento", "amount": tax.get("Importe") or "0"})
        lines.append({"n": n, "description": concepto.get("Descripcion"), "quantity": concepto.get("Cantidad"), "price": concepto.get("ValorUnitario"),
                      "amount": concepto.get("Importe"), "discount": concepto.get("Descuento"), "taxes": taxes})
    impuestos = root.find(f"{CFDI}Impuestos")
    return {
        "subtotal": root.get("SubTotal"), "discount": root.get("Descuento"), "total": root.get("Total"), "currency": root.get("Moneda"),
        "transferred": impuestos.get("TotalImpuestosTrasladados") if impuestos is not None else None,
        "withheld": impuestos.get("TotalImpuestosRetenidos") if impuestos is not None else None,
        "lines": lines,
    }


# ---------------------------------------------------------------------- records

@router.get("/facturas")
async def records(request: Request) -> Response:
    """Registros CFDI: search and filter. Every filter the API offers is passed through as is."""
    session_of(request)
    q = request.query_params
    filters = {k: q.get(k, "").strip() for k in ("status", "uuid", "customer_rfc", "serie", "folio", "created_from", "created_to", "type")}
    if filters["status"] not in LISTED_STATUSES:
        filters["status"] = ""
    params = {k: v for k, v in filters.items() if v}
    if q.get("despues"):
        params["starting_after"] = q["despues"]
    result = await api_of(request).get("/v1/invoices", limit=20, **params)
    data = result.get("data", [])
    return await page(request, "panel/invoice_list.html", {
        "invoices": data, "filters": filters, "has_more": result.get("has_more") and data, "last_id": data[-1]["id"] if data else "",
        "statuses": {k: STATUS_ES[k] for k in LISTED_STATUSES}, "query": "&".join(f"{k}={quote(v)}" for k, v in params.items() if k != "starting_after"),
    })


async def _invoice_with_xml(request: Request, invoice_id: str) -> dict[str, Any]:
    api = api_of(request)
    invoice = await api.get(f"/v1/invoices/{invoice_id}")
    invoice["cfdi"] = None
    if invoice.get("status") in STAMPED | {"canceled"} or invoice.get("uuid"):
        response = await api.raw("GET", f"/v1/invoices/{invoice_id}/xml")
        if response.status_code == 200:
            invoice["cfdi"] = cfdi_summary(response.content)
    return invoice


def cfdi_summary(xml: bytes) -> dict[str, Any]:
    """What the detail page shows from the stamped XML (the read model keeps only the status)."""
    root = parse_xml(xml)
    receptor = root.find(f"{CFDI}Receptor")
    tfd = next(root.iter("{http://www.sat.gob.mx/TimbreFiscalDigital}TimbreFiscalDigital"), None)
    items = []
    for c in root.iter(f"{CFDI}Concepto"):
        tax = "none"
        traslados = [t for t in c.iter(f"{CFDI}Traslado")]
        if traslados and traslados[0].get("Impuesto") == "002":
            t = traslados[0]
            tax = "exento" if t.get("TipoFactor") == "Exento" else {"0.160000": "iva16", "0.080000": "iva8", "0.000000": "iva0"}.get(t.get("TasaOCuota") or "", "iva16")
        items.append({"sku": c.get("NoIdentificacion") or "", "description": c.get("Descripcion"), "product_key": c.get("ClaveProdServ"), "unit_key": c.get("ClaveUnidad"),
                      "unit_name": c.get("Unidad") or "", "price": c.get("ValorUnitario"), "quantity": c.get("Cantidad"), "discount": c.get("Descuento") or "0",
                      "taxability": c.get("ObjetoImp") or "02", "tax": tax})
    return {
        "serie": root.get("Serie"), "folio": root.get("Folio"), "fecha": root.get("Fecha"), "type": root.get("TipoDeComprobante"),
        "total": root.get("Total"), "subtotal": root.get("SubTotal"), "currency": root.get("Moneda"),
        "payment_method": root.get("MetodoPago"), "payment_form": root.get("FormaPago"), "conditions": root.get("CondicionesDePago"),
        "customer_rfc": receptor.get("Rfc") if receptor is not None else None, "customer_name": receptor.get("Nombre") if receptor is not None else None,
        "use": receptor.get("UsoCFDI") if receptor is not None else None,
        "uuid": tfd.get("UUID") if tfd is not None else None, "stamped_at": tfd.get("FechaTimbrado") if tfd is not None else None,
        "items": items,
    }


@router.get("/facturas/{invoice_id}")
async def detail(request: Request, invoice_id: str, nueva: str = "", sustituye: str = "") -> Response:
    session_of(request)
    invoice = await _invoice_with_xml(request, invoice_id)
    cancellation = await _cancellation(request, invoice_id) if invoice.get("uuid") else None
    return await page(request, "panel/invoice_detail.html", {
        "invoice": invoice, "new": bool(nueva), "substitutes": sustituye, "motives": MOTIVES, "cancellation": cancellation, "cancellation_es": CANCELLATION_ES,
        "final": invoice["status"] in FINAL, "stamped": invoice["status"] in STAMPED,
    })


async def _cancellation(request: Request, invoice_id: str) -> dict[str, Any] | None:
    """The cancellation's state when the cancellation service reports one (GET /v1/invoices/{id}/cancellation)."""
    response = await api_of(request).raw("GET", f"/v1/invoices/{invoice_id}/cancellation")
    if response.status_code != 200 or "json" not in response.headers.get("content-type", ""):
        return None
    return response.json()


@router.get("/facturas/{invoice_id}/estado")
async def status_fragment(request: Request, invoice_id: str) -> Response:
    """Polled by the detail page while the pipeline works; reloads the page when it is done."""
    session_of(request)
    invoice = await api_of(request).get(f"/v1/invoices/{invoice_id}")
    if invoice["status"] in FINAL or invoice["status"] in STAMPED:
        return Response(status_code=204, headers={"HX-Refresh": "true"})
    return fragment(request, "panel/_invoice_status.html", {"invoice": invoice})


@router.get("/facturas/{invoice_id}/{kind}")
async def download(request: Request, invoice_id: str, kind: str) -> Response:
    """XML, PDF, and the cancellation acuse, with the API's own file names."""
    session_of(request)
    paths = {"xml": f"/v1/invoices/{invoice_id}/xml", "pdf": f"/v1/invoices/{invoice_id}/pdf", "acuse": f"/v1/invoices/{invoice_id}/cancellation_receipt"}
    if kind not in paths:
        return await page(request, "panel/error.html", {"title": "No encontrado", "message": "Esa descarga no existe."}, status=404)
    response = await api_of(request).raw("GET", paths[kind])
    if response.status_code != 200:
        raise ApiFailure.from_response(response)
    headers = {k: v for k, v in response.headers.items() if k.lower() in ("content-type", "content-disposition")}
    if kind != "pdf" and "content-disposition" not in {k.lower() for k in headers}:
        headers["Content-Disposition"] = f'attachment; filename="{invoice_id}-{kind}.xml"'
    if kind == "pdf" and request.query_params.get("descargar"):
        headers["Content-Disposition"] = headers.get("content-disposition", f'inline; filename="{invoice_id}.pdf"').replace("inline", "attachment")
        headers.pop("content-disposition", None)
    return Response(response.content, headers=headers)


@router.post("/facturas/{invoice_id}/correo")
async def resend(request: Request, invoice_id: str) -> Response:
    session_of(request)
    form = await checked_form(request)
    emails = [e.strip() for e in form_text(form, "emails").replace(";", ",").split(",") if e.strip()]
    try:
        result = await api_of(request).post(f"/v1/invoices/{invoice_id}/email", {"emails": emails} if emails else None)
    except ApiFailure as exc:
        return fragment(request, "panel/_notice.html", {"ok": False, "message": f"{exc.message} ({exc.code})"})
    sent_to = ", ".join(result.get("recipients") or result.get("to") or emails) if isinstance(result, dict) else ""
    return fragment(request, "panel/_notice.html", {"ok": True, "message": f"Factura reenviada{(' a ' + sent_to) if sent_to else ''}."})


@router.post("/facturas/{invoice_id}/cancelar")
async def cancel(request: Request, invoice_id: str) -> Response:
    """FAQ "¿Cómo cancelo una factura…?": motive 02/03/04 at once; 01 needs the UUID of the invoice
    that replaces it (made first, with relation 04)."""
    session_of(request)
    form = await checked_form(request)
    web = web_of(request)
    motive = form_text(form, "motive")
    replacement = form_text(form, "replacement_uuid").upper()
    if motive not in {m for m, _ in MOTIVES}:
        return fragment(request, "panel/_notice.html", {"ok": False, "message": "Selecciona el motivo de cancelación."}, status=422)
    if motive == "01" and not replacement:
        return fragment(request, "panel/_notice.html", {"ok": False, "message": "Con el motivo 01 escribe el UUID de la factura que sustituye a ésta, o créala primero con «Crear factura sustituta»."}, status=422)
    params = {"motive": motive}
    if replacement:
        params["substitution"] = replacement
    try:
        await api_of(request).delete(f"/v1/invoices/{invoice_id}", params=params)
    except ApiFailure as exc:
        return fragment(request, "panel/_notice.html", {"ok": False, "message": f"{exc.message} ({exc.code})", "errors": errors_by_field(exc)}, status=422)
    return web.redirect(request, f"{web.prefix}/facturas/{invoice_id}?cancelada=1")
