"""The payment complement, Pagos 2.0 (FAQ "¿Cómo hacer un complemento de pago?"): pick the PPD
invoices that still have a balance, enter the payment (date — 12:00 when the time is unknown —,
form, currency, amount) and its related documents, then "Emitir"."""

import asyncio
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from timbra_shared.cfdi.xmlparse import parse_xml
from timbra_shared.web.core import ApiFailure, errors_by_field
from timbra_shared.web.panel.catalogs import sat_options
from timbra_shared.web.panel.common import api_of, checked_form, form_text, page, session_of, web_of
from timbra_shared.web.panel.invoices import STAMPED, new_draft

router = APIRouter(prefix="/pagos")

PAGO20 = "{http://www.sat.gob.mx/Pagos20}"
CFDI = "{http://www.sat.gob.mx/cfd/4}"
SCAN_LIMIT = 100  # invoices looked at when the API does not report balances itself
CENT = Decimal("0.01")


def _dec(text: Any) -> Decimal | None:
    try:
        return Decimal(str(text).replace(",", "").replace("$", "").strip())
    except (InvalidOperation, ValueError):
        return None


async def open_ppd_invoices(request: Request) -> list[dict[str, Any]]:
    """Stamped PPD invoices with a balance: ``{id, uuid, serie, folio, customer_rfc, customer_name,
    customer_id, total, currency, balance, next_installment}``. The balance is the API's when it
    reports one; otherwise it is read from the stamped XMLs (the invoice's Total minus the ImpPagado
    of every stamped payment receipt that names its UUID)."""
    api = api_of(request)
    listed = await api.get("/v1/invoices", limit=SCAN_LIMIT, type="I", payment_method="PPD")
    invoices = [i for i in listed.get("data", []) if i.get("status") in STAMPED and (i.get("type") in (None, "I"))]
    if invoices and all("balance" in i for i in invoices):
        return [i | {"next_installment": i.get("next_installment") or (i.get("installments", 0) + 1)} for i in invoices if (_dec(i["balance"]) or 0) > 0]
    payments = await api.get("/v1/invoices", limit=SCAN_LIMIT, type="P")
    receipts = [p for p in payments.get("data", []) if p.get("status") in STAMPED and p.get("type") in (None, "P")]
    xmls = await asyncio.gather(*(_xml(request, i["id"]) for i in invoices + receipts))
    paid: dict[str, Decimal] = {}
    installments: dict[str, int] = {}
    for xml in xmls[len(invoices):]:
        if xml is None or xml.get("TipoDeComprobante") != "P":
            continue
        for doc in xml.iter(f"{PAGO20}DoctoRelacionado"):
            uuid = (doc.get("IdDocumento") or "").upper()
            paid[uuid] = paid.get(uuid, Decimal(0)) + (_dec(doc.get("ImpPagado")) or Decimal(0))
            installments[uuid] = max(installments.get(uuid, 0), int(doc.get("NumParcialidad") or 0))
    out = []
    for invoice, xml in zip(invoices, xmls[: len(invoices)], strict=True):
        if xml is None or xml.get("MetodoPago") != "PPD" or xml.get("TipoDeComprobante") != "I":
            continue
        uuid = (invoice.get("uuid") or "").upper()
        total = _dec(xml.get("Total")) or Decimal(0)
        balance = (total - paid.get(uuid, Decimal(0))).quantize(CENT)
        if balance <= 0:
            continue
        receptor = xml.find(f"{CFDI}Receptor")
        out.append({
            "id": invoice["id"], "uuid": uuid, "serie": xml.get("Serie"), "folio": xml.get("Folio"), "fecha": xml.get("Fecha"),
            "customer_rfc": receptor.get("Rfc") if receptor is not None else "", "customer_name": receptor.get("Nombre") if receptor is not None else "",
            "customer_id": invoice.get("customer_id"), "total": str(total), "currency": xml.get("Moneda") or "MXN",
            # the receipt's Receptor is the invoice's, exactly as stamped
            "customer": None if receptor is None else {"rfc": receptor.get("Rfc"), "legal_name": receptor.get("Nombre"), "tax_regime": receptor.get("RegimenFiscalReceptor"), "zip": receptor.get("DomicilioFiscalReceptor")},
            "balance": str(balance), "next_installment": installments.get(uuid, 0) + 1,
            "taxability": "02" if _taxes_of(xml) else "01",
            "taxes": _taxes_of(xml),
        })
    return out


def _taxes_of(xml: Any) -> list[dict[str, Any]]:
    """The invoice's taxes (Comprobante/Impuestos) as the request's TaxIn list, for its DoctoRelacionado."""
    names = {"001": "ISR", "002": "IVA", "003": "IEPS"}
    impuestos = xml.find(f"{CFDI}Impuestos")
    if impuestos is None:
        return []
    taxes: list[dict[str, Any]] = []
    for tag, withholding in (("Traslado", False), ("Retencion", True)):
        for tax in impuestos.iter(f"{CFDI}{tag}"):
            entry: dict[str, Any] = {"type": names.get(tax.get("Impuesto", ""), "IVA"), "factor": tax.get("TipoFactor") or "Tasa", "withholding": withholding}
            if tax.get("TasaOCuota"):
                entry["rate"] = tax.get("TasaOCuota")
            if entry not in taxes:
                taxes.append(entry)
    return taxes


async def _xml(request: Request, invoice_id: str) -> Any:
    response = await api_of(request).raw("GET", f"/v1/invoices/{invoice_id}/xml")
    if response.status_code != 200:
        return None
    try:
        return parse_xml(response.content)
    except Exception:  # noqa: BLE001 - an unreadable XML is simply not offered
        return None


def default_payment_date() -> str:
    """The seed's advice: when the exact time is unknown, use 12:00."""
    return f"{date.today().isoformat()}T12:00"


async def _payment_page(request: Request, values: dict[str, Any] | None = None, errors: dict[str, list[str]] | None = None, status: int = 200) -> Response:
    invoices = await open_ppd_invoices(request)
    forms = [f for f in await sat_options(request, "payment_forms") if f["code"] != "99"]
    customers = sorted({(i["customer_rfc"], i["customer_name"]) for i in invoices})
    values = values or {"date": default_payment_date(), "payment_form": "03", "currency": "MXN", "selected": [], "idempotency_key": new_draft()["idempotency_key"]}
    return await page(request, "panel/payment_new.html", {"invoices": invoices, "forms": forms, "customers": customers, "values": values, "errors": errors or {}}, status=status)


@router.get("/nuevo")
async def new_payment(request: Request, factura: str = "") -> Response:
    session_of(request)
    values = {"date": default_payment_date(), "payment_form": "03", "currency": "MXN", "selected": [factura] if factura else [], "idempotency_key": new_draft()["idempotency_key"]}
    return await _payment_page(request, values)


def payment_body(values: dict[str, Any], chosen: list[dict[str, Any]], customer_id: str | None, customer: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``POST /v1/invoices`` body of a type P receipt (Pagos 2.0) with one Pago."""
    when = values["date"] if len(values["date"]) > 16 else values["date"] + ":00"
    payment: dict[str, Any] = {
        "date": when,
        "payment_form": values["payment_form"],
        "currency": values["currency"],
        "amount": values["amount"],
        "related_documents": [
            {
                "uuid": doc["uuid"], "installment": int(doc["installment"]), "previous_balance": doc["previous_balance"],
                "amount_paid": doc["amount_paid"], "currency": doc.get("currency") or "MXN", "taxability": doc.get("taxability") or "02",
                **({"taxes": doc["taxes"]} if "taxes" in doc else {}),
                **({"serie": doc["serie"]} if doc.get("serie") else {}), **({"folio": doc["folio"]} if doc.get("folio") else {}),
            }
            for doc in chosen
        ],
    }
    if values.get("exchange"):
        payment["exchange"] = values["exchange"]
    body: dict[str, Any] = {"type": "P", "payments": [payment], "idempotency_key": values.get("idempotency_key")}
    if customer_id:
        body["customer_id"] = customer_id
    elif customer:
        body["customer"] = customer
    return {k: v for k, v in body.items() if v}


@router.post("/nuevo")
async def emit(request: Request) -> Response:
    """"Emitir": the receipt goes through the same pipeline as any invoice."""
    session_of(request)
    form = await checked_form(request)
    web = web_of(request)
    values: dict[str, Any] = {k: form_text(form, k) for k in ("date", "payment_form", "currency", "exchange", "amount", "idempotency_key")}
    values["selected"] = [s for s in form.getlist("invoice") if isinstance(s, str)]
    errors: dict[str, list[str]] = {}
    if not values["date"]:
        errors["date"] = ["Indica la fecha del pago (usa las 12:00 si no sabes la hora exacta)."]
    amount = _dec(values["amount"])
    if amount is None or amount <= 0:
        errors["amount"] = ["Indica el monto del pago."]
    invoices = {i["id"]: i for i in await open_ppd_invoices(request)}
    chosen = []
    for invoice_id in values["selected"]:
        invoice = invoices.get(invoice_id)
        if invoice is None:
            errors.setdefault("invoice", []).append("Una de las facturas elegidas ya no tiene saldo pendiente.")
            continue
        paid = _dec(form_text(form, f"paid_{invoice_id}")) or Decimal(0)
        if paid <= 0 or paid > Decimal(invoice["balance"]):
            errors[f"paid_{invoice_id}"] = [f"El importe pagado debe ser mayor que 0 y no mayor que el saldo anterior ({invoice['balance']})."]
        installment = form_text(form, f"installment_{invoice_id}") or str(invoice["next_installment"])
        if not installment.isdigit() or int(installment) < 1:
            errors[f"paid_{invoice_id}"] = ["El número de parcialidad debe ser 1 o mayor."]
            installment = str(invoice["next_installment"])
        chosen.append(invoice | {"installment": installment, "previous_balance": invoice["balance"], "amount_paid": str(paid.quantize(CENT))})
        values[f"paid_{invoice_id}"] = form_text(form, f"paid_{invoice_id}")
        values[f"installment_{invoice_id}"] = form_text(form, f"installment_{invoice_id}")
    if not chosen and "invoice" not in errors:
        errors["invoice"] = ["Agrega al menos un documento relacionado: marca la factura PPD que se está pagando."]
    if chosen and amount is not None and sum((Decimal(c["amount_paid"]) for c in chosen), Decimal(0)) > amount:
        errors["amount"] = ["La suma de los importes pagados de los documentos relacionados excede el monto del pago."]
    if len({c["customer_rfc"] for c in chosen}) > 1:
        errors["invoice"] = ["Un recibo de pago es para un solo cliente: elige facturas del mismo RFC."]
    if errors:
        return await _payment_page(request, values, errors, status=422)
    try:
        result = await api_of(request).post("/v1/invoices", payment_body(values, chosen, chosen[0].get("customer_id"), chosen[0].get("customer")), params={"wait": "true", "timeout": "25"})
    except ApiFailure as exc:
        values["idempotency_key"] = new_draft()["idempotency_key"]
        return await _payment_page(request, values, errors_by_field(exc), status=422)
    if result["status"] in ("rejected", "stamp_failed"):
        values["idempotency_key"] = new_draft()["idempotency_key"]
        return await _payment_page(request, values, errors_by_field(errors=result.get("errors") or [], message=result.get("message")), status=422)
    return web.redirect(request, f"{web.prefix}/facturas/{result['id']}?nueva=1")
