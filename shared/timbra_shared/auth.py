"""Principals and the short-lived signed tokens that carry them between the ingress and services.

The ingress exchanges a caller's bearer key at issuer-profile (the only service that stores key
hashes) for a token signed with ``TIMBRA_INTERNAL_SECRET``; every service verifies it locally, so
no request needs a second network hop to authenticate.
"""

import base64
import hashlib
import hmac
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

from fastapi import Request

from timbra_shared.errors import ApiError

PRINCIPAL_HEADER = "x-timbra-principal"
TOKEN_TTL_S = 300

Kind = Literal["admin", "staff", "issuer"]


@dataclass(frozen=True)
class Principal:
    kind: Kind
    issuer_id: str | None = None
    roles: tuple[str, ...] = field(default_factory=tuple)
    livemode: bool = False
    key_id: str | None = None

    def has_role(self, *roles: str) -> bool:
        return self.kind == "admin" or any(r in self.roles for r in roles)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_token(principal: Principal, secret: str, ttl: int = TOKEN_TTL_S) -> str:
    claims = asdict(principal) | {"exp": int(time.time()) + ttl}
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify_token(token: str, secret: str) -> Principal | None:
    try:
        body, mac = token.split(".", 1)
        expected = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(mac)):
            return None
        claims = json.loads(_unb64(body))
        if claims.pop("exp", 0) < time.time():
            return None
        claims["roles"] = tuple(claims.get("roles") or ())
        return Principal(**claims)
    except (ValueError, TypeError, json.JSONDecodeError):
        return None


CLIENT_IP_HEADER = "x-timbra-client-ip"  # set by the ingress on every proxied request (clients cannot)
CLIENT_PROOF_HEADER = "x-timbra-client-proof"


def client_proof(secret: str, address: str) -> str:
    """Lets the web areas, which call the API in process, pass on their visitor's address: the
    ingress believes ``x-timbra-client-ip`` only with this HMAC next to it."""
    return hmac.new(secret.encode(), f"client-ip|{address}".encode(), hashlib.sha256).hexdigest()


def hash_api_key(key: str) -> str:
    """API keys carry 256 random bits, so a plain SHA-256 is a safe, indexable hash for them."""
    return hashlib.sha256(key.encode()).hexdigest()


UNAUTHORIZED = ApiError(401, "unauthorized", "Falta una llave de API válida en el encabezado Authorization: Bearer <llave>.")


async def current_principal(request: Request) -> Principal:
    token = request.headers.get(PRINCIPAL_HEADER)
    principal = verify_token(token, request.app.state.internal_secret) if token else None
    if principal is None:
        raise UNAUTHORIZED
    return principal


async def issuer_principal(request: Request) -> Principal:
    principal = await current_principal(request)
    if principal.kind != "issuer" or not principal.issuer_id:
        raise ApiError(403, "forbidden", "Esta operación requiere la llave de API de un emisor.")
    return principal


async def operator_principal(request: Request) -> Principal:
    """Timbra's operators (and the admin) only: the /v1/ops routes of every service."""
    principal = await current_principal(request)
    if principal.kind == "issuer":
        raise ApiError(403, "forbidden", "Esta operación es solo para el personal de operación de Timbra.")
    require_roles(principal, "operator")
    return principal


def require_roles(principal: Principal, *roles: str) -> None:
    if not principal.has_role(*roles):
        raise ApiError(403, "forbidden", "No tienes permiso para esta operación.")
