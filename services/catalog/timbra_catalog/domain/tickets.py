"""Store tickets: their invoicing window, and the global invoice (público en general) that covers
the tickets nobody invoiced."""

import calendar
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from timbra_shared.cfdi import catalogs
from timbra_shared.errors import Problem
from timbra_shared.events import GlobalInfoIn, InvoiceRequest, ItemIn, ProductIn, TaxIn

DEFAULT_TZ = "America/Mexico_City"
GLOBAL_PRODUCT_KEY = "01010101"  # SAT's guide for the global invoice: ClaveProdServ 01010101,
GLOBAL_UNIT_KEY = "ACT"          # ClaveUnidad ACT, Descripcion "Venta", NoIdentificacion = ticket number
BIMONTHLY = {"13": (1, 2), "14": (3, 4), "15": (5, 6), "16": (7, 8), "17": (9, 10), "18": (11, 12)}


def zone_of(zip_code: str | None) -> ZoneInfo:
    cp = catalogs.codigo_postal(zip_code) if zip_code else None
    return ZoneInfo(cp.timezone if cp else DEFAULT_TZ)


def local(moment: datetime, zone: ZoneInfo) -> datetime:
    """A naive ticket date is local time at the branch; an aware one is converted to it."""
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment.astimezone(zone)


def invoiceable_until(ticket_date: datetime, zone: ZoneInfo, window_days: int | None) -> datetime:
    """The first instant at which the ticket can no longer be invoiced on its own.

    ``window_days`` None (the default) is SAT's usual practice: the same calendar month as the
    sale. ``window_days`` N: until the end of the N-th day after the sale (local time)."""
    day = local(ticket_date, zone).date()
    if window_days is None:
        last = calendar.monthrange(day.year, day.month)[1]
        end = date(day.year, day.month, last) + timedelta(days=1)
    else:
        end = day + timedelta(days=window_days + 1)
    return datetime.combine(end, time(0), tzinfo=zone)


@dataclass
class Period:
    start: datetime  # inclusive, local time
    end: datetime  # exclusive


def global_period(periodicity: str, months: str, year: int, zone: ZoneInfo, start: date | None, end: date | None) -> tuple[Period | None, list[Problem]]:
    """The period a global invoice covers: the months of InformacionGlobal, or a part of them
    (a day, a week, a fortnight) given by ``start``/``end`` (inclusive dates)."""
    problems: list[Problem] = []
    if periodicity == "05":
        if months not in BIMONTHLY:
            problems.append(Problem("CFDI40135", "Con periodicidad bimestral (05) los meses van de 13 a 18.", "sat", "months"))
            return None, problems
        first, last = BIMONTHLY[months]
    else:
        if not ("01" <= months <= "12"):
            problems.append(Problem("CFDI40134", "Con periodicidad distinta de bimestral los meses van de 01 a 12.", "sat", "months"))
            return None, problems
        first = last = int(months)
    month_start = date(year, first, 1)
    month_end = date(year, last, calendar.monthrange(year, last)[1])
    start = start or month_start
    end = end or month_end
    if start > end or start < month_start or end > month_end:
        problems.append(Problem("TIMBRA_GLOBAL_PERIOD_INVALID", f"El periodo {start}..{end} debe quedar dentro de los meses {months} de {year}.", "timbra", "from"))
        return None, problems
    if periodicity in ("01",) and start != end:
        problems.append(Problem("TIMBRA_GLOBAL_PERIOD_INVALID", "Con periodicidad diaria (01) indica un solo día (from = to).", "timbra", "from"))
        return None, problems
    return Period(datetime.combine(start, time(0), tzinfo=zone), datetime.combine(end + timedelta(days=1), time(0), tzinfo=zone)), []


def _line_amount(item: ItemIn, product: ProductIn) -> Decimal:
    return Decimal(product.price) * Decimal(item.quantity) - Decimal(item.discount or 0)


def _signature(product: ProductIn) -> tuple[Any, ...]:
    taxes = tuple(sorted((t.type, str(t.rate), t.factor, t.withholding) for t in product.taxes)) if product.taxability == "02" else ()
    return (product.taxability, product.tax_included, taxes)


def global_items(tickets: list[dict[str, Any]], products: dict[str, ProductIn]) -> tuple[list[ItemIn], list[Problem]]:
    """One concepto per ticket (per tax treatment within a ticket): quantity 1, the ticket's
    amount as the unit value, NoIdentificacion = ticket number."""
    items: list[ItemIn] = []
    problems: list[Problem] = []
    for ticket in tickets:
        groups: dict[tuple[Any, ...], tuple[ProductIn, Decimal]] = {}
        for n, raw in enumerate(ticket["items"]):
            item = ItemIn.model_validate(raw)
            product = item.product or products.get(item.product_id or "")
            if product is None:
                problems.append(Problem("TIMBRA_PRODUCT_NOT_FOUND", f"El ticket {ticket['ticket_number']} usa el producto {item.product_id}, que no existe.", "timbra", f"tickets[{ticket['_id']}].items[{n}]"))
                continue
            key = _signature(product)
            previous = groups.get(key)
            groups[key] = (product, (previous[1] if previous else Decimal(0)) + _line_amount(item, product))
        for product, amount in groups.values():
            items.append(ItemIn(quantity=Decimal(1), product=ProductIn(
                description="Venta",
                product_key=GLOBAL_PRODUCT_KEY,
                unit_key=GLOBAL_UNIT_KEY,
                sku=ticket["ticket_number"],
                price=amount.quantize(Decimal("0.000001")),
                tax_included=product.tax_included,
                taxability=product.taxability,
                taxes=[TaxIn.model_validate(t.model_dump()) for t in product.taxes],
            )))
    return items, problems


def main_payment_form(tickets: list[dict[str, Any]]) -> str:
    """SAT: the global invoice carries the payment form that received the largest amount."""
    totals: dict[str, Decimal] = {}
    for ticket in tickets:
        form = ticket.get("payment_form") or "01"
        totals[form] = totals.get(form, Decimal(0)) + Decimal(str(ticket["total"]))
    return max(sorted(totals), key=lambda f: totals[f])


def global_request(
    tickets: list[dict[str, Any]], products: dict[str, ProductIn], *, periodicity: str, months: str, year: int, branch_id: str, key: str,
) -> tuple[InvoiceRequest | None, list[Problem]]:
    items, problems = global_items(tickets, products)
    if problems:
        return None, problems
    return InvoiceRequest(
        type="I",
        items=items,
        payment_form=main_payment_form(tickets),
        payment_method="PUE",
        use="S01",
        global_info=GlobalInfoIn(periodicity=periodicity, months=months, year=year),  # type: ignore[arg-type]
        branch_id=branch_id,
        ticket_ids=[t["_id"] for t in tickets],
        idempotency_key=key,
    ), []
