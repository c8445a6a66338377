"""Rules of the self-invoicing portal (seed 004) that need no I/O: matching what a customer types
against a store ticket, the lookup throttle, customer passwords, the arithmetic captcha and the
temporary password of the recovery.

Every refusal is a coded ``Problem`` with a Spanish message the customer can act on."""

import hashlib
import hmac
import math
import random
import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from timbra_shared.errors import Problem

MIN_PASSWORD = 10
TEMP_PASSWORD_TTL = timedelta(hours=1)
CAPTCHA_TTL = timedelta(minutes=10)
SESSION_TTL = timedelta(hours=2)
LIVE_STATUSES = ("requested", "processing", "waiting_sat")

# How often a client address may get a lookup wrong, per issuer, before it has to wait. A real
# customer mistypes a few times; an enumerator needs thousands of tries.
THROTTLES = {
    "ticket": (8, timedelta(minutes=15)),   # wrong ticket lookups (not found, total mismatch)
    "rfc": (40, timedelta(minutes=15)),     # RFC prefill lookups (each one counts)
    "login": (10, timedelta(minutes=15)),   # wrong passwords
    "recovery": (5, timedelta(minutes=15)),  # password-recovery requests
}


# ---------------------------------------------------------------------- the ticket

def parse_total(text: Any) -> Decimal | None:
    """``"1,160.00"``, ``"$1160"``, ``" 1160.5 "`` -> Decimal; None when it is not an amount."""
    cleaned = re.sub(r"[\s$,]", "", str(text or ""))
    if not re.fullmatch(r"\d{1,12}(\.\d{1,2})?", cleaned):
        return None
    try:
        return Decimal(cleaned).quantize(Decimal("0.01"))
    except InvalidOperation:
        return None


def clean_number(text: Any) -> str:
    """Order and ticket numbers as printed: blanks around removed, inner blanks too, case kept."""
    return re.sub(r"\s+", "", str(text or ""))[:60]


def ticket_not_found(branch_name: str) -> Problem:
    return Problem("TIMBRA_TICKET_NOT_FOUND", f"No encontramos un ticket con ese número de orden y número de ticket en la sucursal {branch_name}. "
                   "Revisa los datos impresos en tu ticket (toca el signo ? para ver dónde están).", "timbra", "ticket_number")


def check_ticket(ticket: dict[str, Any] | None, *, branch_name: str, order_number: str, total: Decimal, now: datetime, zone: ZoneInfo) -> Problem | None:
    """Why this ticket cannot be invoiced from the portal, or None. A wrong order number answers
    like a missing ticket, so the two numbers cannot be probed one at a time."""
    if ticket is None or ticket.get("deleted_at") is not None:
        return ticket_not_found(branch_name)
    printed_order = clean_number(ticket.get("order_number"))
    if printed_order and printed_order.casefold() != clean_number(order_number).casefold():
        return ticket_not_found(branch_name)
    if Decimal(str(ticket["total"])).quantize(Decimal("0.01")) != total:
        return Problem("TIMBRA_TICKET_TOTAL_MISMATCH", "El total no coincide con el del ticket. Escríbelo exactamente como aparece impreso, con centavos "
                       "(por ejemplo 1160.00).", "timbra", "total")
    if ticket.get("status") in ("invoiced", "pending"):
        return already_invoiced()
    until = ticket.get("invoiceable_until")
    if isinstance(until, datetime) and _aware(until) <= now:
        last_day = (_aware(until).astimezone(zone) - timedelta(seconds=1)).strftime("%d/%m/%Y")
        return Problem("TIMBRA_TICKET_WINDOW_CLOSED", f"El plazo para facturar este ticket terminó el {last_day}. La venta ya se incluyó "
                       "(o se incluirá) en la factura global del público en general; si necesitas ayuda, acude a la sucursal.", "timbra", "ticket_number")
    return None


def already_invoiced() -> Problem:
    return Problem("TIMBRA_TICKET_ALREADY_INVOICED", "Este ticket ya fue facturado. Si la factura es tuya, descárgala en el Panel de control de facturas "
                   "o pide que te la reenvíen.", "timbra", "ticket_number")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo("UTC"))


# ---------------------------------------------------------------------- the throttle

@dataclass
class Attempts:
    """A fixed window of attempts by one client address at one issuer's portal, for one kind."""

    count: int
    window_start: datetime


def blocked_for(attempts: Attempts | None, kind: str, now: datetime) -> int:
    """Seconds the client must wait (0: it may try)."""
    limit, window = THROTTLES[kind]
    if attempts is None or now - attempts.window_start >= window or attempts.count < limit:
        return 0
    return max(1, math.ceil((attempts.window_start + window - now).total_seconds()))


def rate_limited(kind: str, seconds: int) -> Problem:
    minutes = max(1, -(-seconds // 60))
    what = {"ticket": "búsquedas de tickets que no coincidieron", "rfc": "consultas de RFC", "login": "intentos de inicio de sesión fallidos",
            "recovery": "solicitudes de recuperación de contraseña"}[kind]
    return Problem("TIMBRA_PORTAL_RATE_LIMITED", f"Demasiadas {what} desde tu conexión. Por seguridad, espera {minutes} "
                   f"minuto{'s' if minutes != 1 else ''} e intenta de nuevo.", "timbra")


# ---------------------------------------------------------------------- passwords and tokens

def validate_password(password: str, confirmation: str | None, *, rfc: str = "") -> list[Problem]:
    problems = []
    if confirmation is not None and confirmation != password:
        problems.append(Problem("TIMBRA_PASSWORD_MISMATCH", "La contraseña y su confirmación no coinciden.", "timbra", "password_confirmation"))
    if len(password) < MIN_PASSWORD:
        problems.append(Problem("TIMBRA_PASSWORD_WEAK", f"La contraseña debe tener al menos {MIN_PASSWORD} caracteres.", "timbra", "password"))
    elif not (re.search(r"[A-Za-zÑñ]", password) and re.search(r"\d", password)):
        problems.append(Problem("TIMBRA_PASSWORD_WEAK", "La contraseña debe combinar letras y números.", "timbra", "password"))
    elif rfc and rfc.lower() in password.lower():
        problems.append(Problem("TIMBRA_PASSWORD_WEAK", "La contraseña no puede contener tu RFC.", "timbra", "password"))
    return problems


def temporary_password() -> str:
    """Ten characters, letters and digits without look-alikes (0/O, 1/l/I), always both kinds."""
    letters = "".join(c for c in string.ascii_letters if c not in "OIl")
    digits = "23456789"
    chars = [secrets.choice(letters) for _ in range(7)] + [secrets.choice(digits) for _ in range(3)]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def new_token() -> str:
    return "tp_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def receipt_for(secret: str, issuer_id: str, invoice_id: str) -> str:
    """What lets the browser that generated an invoice see it without an account."""
    return hmac.new(secret.encode(), f"portal-receipt|{issuer_id}|{invoice_id}".encode(), hashlib.sha256).hexdigest()[:40]


def receipt_ok(secret: str, issuer_id: str, invoice_id: str, receipt: str | None) -> bool:
    return bool(receipt) and hmac.compare_digest(receipt_for(secret, issuer_id, invoice_id), str(receipt))


def mask_email(email: str | None) -> str | None:
    """``ana.perez@example.com`` -> ``a***z@example.com`` (prefill shows whose mail without giving it away)."""
    if not email or "@" not in email:
        return None
    local, domain = email.split("@", 1)
    return f"{local[0]}***{local[-1] if len(local) > 1 else ''}@{domain}"


# ---------------------------------------------------------------------- the captcha

@dataclass
class Captcha:
    question: str
    answer: str
    svg: str


def new_captcha(rng: random.Random | None = None) -> Captcha:
    """A sum or a difference of two small numbers drawn as a distorted SVG (no external service,
    no font download): enough to stop a script that posts the recovery form blindly."""
    rng = rng or random.SystemRandom()
    a, b = rng.randint(2, 19), rng.randint(1, 9)
    if rng.random() < 0.5:
        question, answer = f"{a} + {b}", a + b
    else:
        a = max(a, b + 1)
        question, answer = f"{a} - {b}", a - b
    return Captcha(question=question, answer=str(answer), svg=captcha_svg(f"{question} =", rng))


def captcha_svg(text: str, rng: random.Random) -> str:
    width, height = 200, 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="Operación del captcha">',
             f'<rect width="{width}" height="{height}" fill="#f3f6fb"/>']
    for _ in range(6):
        parts.append(f'<line x1="{rng.randint(0, width)}" y1="{rng.randint(0, height)}" x2="{rng.randint(0, width)}" y2="{rng.randint(0, height)}" '
                     f'stroke="#{rng.randint(0x88, 0xcc):02x}{rng.randint(0x88, 0xcc):02x}{rng.randint(0x99, 0xdd):02x}" stroke-width="1.5"/>')
    x = 14
    for char in text:
        if char == " ":
            x += 8
            continue
        y = rng.randint(36, 46)
        angle = rng.randint(-18, 18)
        parts.append(f'<text x="{x}" y="{y}" transform="rotate({angle} {x} {y})" font-family="monospace" font-size="{rng.randint(24, 30)}" '
                     f'font-weight="bold" fill="#1d3557">{char}</text>')
        x += 20
    for _ in range(30):
        parts.append(f'<circle cx="{rng.randint(0, width)}" cy="{rng.randint(0, height)}" r="1" fill="#457b9d"/>')
    parts.append("</svg>")
    return "".join(parts)


def captcha_hash(secret: str, captcha_id: str, answer: str) -> str:
    return hmac.new(secret.encode(), f"portal-captcha|{captcha_id}|{answer.strip()}".encode(), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------- payment forms offered

PAYMENT_FORMS = [
    ("01", "Efectivo"), ("04", "Tarjeta de crédito"), ("28", "Tarjeta de débito"), ("03", "Transferencia electrónica de fondos"),
    ("02", "Cheque nominativo"), ("05", "Monedero electrónico"), ("06", "Dinero electrónico"), ("08", "Vales de despensa"),
]
PAYMENT_FORM_CODES = {code for code, _ in PAYMENT_FORMS}
