"""The sandbox PAC's HTTP API, modelled on SW Sapien's REST contract.

- ``POST /security/authenticate`` (headers ``user``, ``password``) and
  ``POST /v2/security/authenticate`` (JSON ``{user, password}``): a temporary bearer token.
  The configured ``TIMBRA_PAC_TOKEN`` is accepted too (SW's "infinite token").
- ``POST /cfdi33/stamp/v4`` and ``POST /v4/cfdi33/stamp/v4`` (multipart ``xml``; header
  ``customid`` optional): validate and stamp. Response ``data`` has SW's version-4 fields.
- ``GET /cfdi33/stamp/status?customid=…`` or ``?hash=…``: a previous stamp.
- ``GET /certificate``: the DER certificate that signs SelloSAT.
- ``GET/PUT /admin/config``: which validations run (``xsd``, ``rules``); ``TIMBRA_PAC_FAST=1``
  starts with the XSD check off.
- ``GET/PUT /admin/faults``: fault injection at runtime (see :class:`Faults`).
- Cancellation (SAT's side in ``sat.py``): ``POST /cfdi33/cancel/{rfc}/{uuid}/{motivo}[/{folio}]``
  (SW's cancel by UUID → ``data: {acuse, uuid: {UUID: "201"}}``), ``POST /ConsultaCFDIService.svc``
  (SAT's status service, SOAP), ``POST /acceptreject/{rfc_receptor}/{uuid}/{Aceptacion|Rechazo}``
  and ``GET /pendings/{rfc_receptor}`` (the receptor's side), ``GET/PUT /admin/cancellation-rules``
  and ``DELETE /admin/cancellation-rules/{key}`` (the receptor's answer and compressed SAT clocks
  per UUID, receptor RFC, issuer RFC or ``*``), ``GET /admin/cancellations/{uuid}`` (introspection:
  calls received, requests registered, SAT's status).

Every answer uses SW's envelope ``{status, message, messageDetail, data}``; a rejection carries
SAT's code at the start of ``message`` (``"CFDI40108 - …"``).
"""

import asyncio
import hashlib
import os
import random
import secrets
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import orjson
from fastapi import FastAPI, Header, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.formparsers import MultiPartException

from timbra_shared.cfdi import load_csd, parse_xml, validate, verify
from timbra_shared.cfdi.csd import embedded_certificate
from timbra_shared.cfdi.errors import CfdiError
from timbra_shared.cfdi.fecha import now_local
from timbra_shared.cfdi.testing import make_csd
from timbra_shared.cfdi.tfd import stamp as stamp_tfd
from timbra_shared.pac import sat_status
from timbra_shared.sandbox_pac.sat import Refused, Rule, SatSimulator, facts_of_root
from timbra_shared.sandbox_pac.store import StampStore

RFC_PROV_CERTIF = "SAT970701NN3"
WINDOW = timedelta(hours=72)
FUTURE_TOLERANCE = timedelta(minutes=5)
MODES = ("none", "outage", "refuse", "timeout", "timeout_after_stamp", "error", "reject", "timeout_after_cancel")
TIMBRE_PREVIO = "307. El comprobante contiene un timbre previo."
TOKEN_INVALID = "AU4101 - El token proporcionado no es válido."


@dataclass
class Faults:
    """Runtime fault injection.

    ``mode``:
      - ``none``;
      - ``outage``: every request answers ``outage_status`` (503 "SAT no disponible");
      - ``refuse``: the server closes its listening socket and every open connection for
        ``refuse_for_s`` seconds (connection refused), then listens again;
      - ``timeout``: waits ``timeout_s`` then answers 504 without stamping;
      - ``timeout_after_stamp``: stamps, then waits ``timeout_s`` before answering;
      - ``error``: like ``none`` with ``error_rate`` defaulting to all requests;
      - ``reject``: rejects every new CFDI with ``reject_code``/``reject_message`` (what SAT
        checks against its own lists, e.g. the issuer's name, which no local rule can see);
      - ``timeout_after_cancel``: registers a cancellation request, then waits ``timeout_s``.
    ``outage``, ``refuse`` and ``timeout`` apply to cancellation and status calls too.
    ``latency_ms`` delays every stamp and lookup; ``error_rate`` answers that share of stamp
    requests with a 500/503 (in any mode).
    """

    mode: str = "none"
    outage_status: int = 503
    latency_ms: int = 0
    error_rate: float = 0.0
    timeout_s: float = 15.0
    refuse_for_s: float = 10.0
    reject_code: str = "CFDI40139"
    reject_message: str = "El campo Nombre del emisor debe pertenecer al nombre asociado al RFC registrado en el campo Rfc del Nodo Emisor."


@dataclass
class Checks:
    xsd: bool = True
    rules: bool = True


class _Envelope(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)  # the stamped CFDI is one long JSON string: the standard library escapes it slowly


def _envelope(status_code: int, status: str, message: str | None, detail: str | None = None, data: dict | None = None) -> JSONResponse:
    return _Envelope({"status": status, "message": message, "messageDetail": detail, "data": data}, status_code=status_code)


def _rejection(code: str, message: str, detail: str | None = None) -> JSONResponse:
    return _envelope(400, "error", f"{code} - {message}", detail)


def load_or_create_certificate(folder: str):  # noqa: ANN201
    os.makedirs(folder, exist_ok=True)
    cer_path, key_path = os.path.join(folder, "pac.cer"), os.path.join(folder, "pac.key")
    if not os.path.exists(cer_path):
        cer, key = make_csd(rfc=RFC_PROV_CERTIF, name="SERVICIO DE ADMINISTRACION TRIBUTARIA")
        with open(key_path, "wb") as fh:
            fh.write(key)
        with open(cer_path, "wb") as fh:
            fh.write(cer)
    with open(cer_path, "rb") as fh_cer, open(key_path, "rb") as fh_key:
        cer, key = fh_cer.read(), fh_key.read()
    return cer, load_csd(cer, key, "12345678a")


def _update(target: Any, body: dict[str, Any]) -> None:
    known = {f.name: f for f in fields(target)}
    unknown = set(body) - set(known)
    if unknown:
        raise ValueError(f"campos desconocidos: {sorted(unknown)}")
    for name, value in body.items():
        kind = type(getattr(target, name))
        if kind is bool and not isinstance(value, bool):
            raise ValueError(f"{name} debe ser true o false")
        setattr(target, name, kind(value))


def create_app(
    data_dir: str,
    token: str = "sandbox-token",
    *,
    validate_xsd: bool = True,
    validate_rules: bool = True,
    user: str = "demo",
    password: str = "123456789",
    token_ttl_s: int = 7200,
) -> FastAPI:
    app = FastAPI(title="Timbra sandbox PAC")
    app.state.server = None  # the uvicorn Server, set by __main__ (needed by the ``refuse`` fault)
    folder = os.path.join(data_dir, "sandbox-pac")
    certificate_der, pac_csd = load_or_create_certificate(folder)
    store = StampStore(os.path.join(folder, "stamps.db"))
    sat = SatSimulator(os.path.join(folder, "sat.db"), pac_csd)
    faults = Faults()
    checks = Checks(xsd=validate_xsd, rules=validate_rules)
    counters = {"requests": 0, "stamped": 0, "duplicates": 0, "rejected": 0, "faulted": 0, "lookups": 0, "refused_connections": 0}
    issued: dict[str, float] = {}  # temporary token -> expiry (monotonic)

    def authorized(authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        if secrets.compare_digest(value, token):
            return True
        expiry = issued.get(value)
        return expiry is not None and expiry > time.monotonic()

    def issue_token() -> JSONResponse:
        value = secrets.token_urlsafe(32)
        issued[value] = time.monotonic() + token_ttl_s
        if len(issued) > 10_000:
            now = time.monotonic()
            for stale in [k for k, v in issued.items() if v <= now]:
                issued.pop(stale, None)
        return _envelope(200, "success", None, data={"token": value, "expires_in": int(time.time()) + token_ttl_s, "tokeny_type": "Bearer"})

    def credentials_ok(u: str | None, p: str | None) -> bool:
        return bool(u and p) and secrets.compare_digest(u, user) and secrets.compare_digest(p, password)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True, "stamps": store.count(), **counters, **sat.counters, "faults": asdict(faults), "checks": asdict(checks)}

    @app.get("/certificate")
    async def certificate() -> Response:
        return Response(certificate_der, media_type="application/pkix-cert")

    @app.post("/security/authenticate")
    async def authenticate(user: str | None = Header(None), password: str | None = Header(None)) -> JSONResponse:  # noqa: A002
        if not credentials_ok(user, password):
            return _envelope(401, "error", "AU2000 - El usuario y/o contraseña son inválidos, no se puede autenticar el servicio.")
        return issue_token()

    @app.post("/v2/security/authenticate")
    async def authenticate_v2(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict) or not credentials_ok(body.get("user"), body.get("password")):
            return _envelope(401, "error", "AU2000 - El usuario y/o contraseña son inválidos, no se puede autenticar el servicio.")
        return issue_token()

    @app.get("/admin/config")
    async def get_config() -> dict:
        return asdict(checks)

    @app.put("/admin/config")
    async def set_config(request: Request) -> JSONResponse:
        try:
            _update(checks, await request.json())
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(asdict(checks))

    @app.get("/admin/faults")
    async def get_faults() -> dict:
        return asdict(faults)

    @app.put("/admin/faults")
    async def set_faults(request: Request) -> JSONResponse:
        body = await request.json()
        if body.get("mode", faults.mode) not in MODES:
            return JSONResponse({"error": f"mode debe ser uno de {MODES}"}, status_code=400)
        try:
            _update(faults, body)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if faults.mode == "error" and "error_rate" not in body and faults.error_rate == 0:
            faults.error_rate = 1.0
        if faults.mode == "refuse":
            asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(_refuse(request.app, faults, counters)))
        return JSONResponse(asdict(faults))

    async def injected() -> JSONResponse | None:
        """The fault that applies to any PAC call (stamp or lookup), if any."""
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.mode == "outage":
            counters["faulted"] += 1
            return _envelope(faults.outage_status, "error", "SAT no disponible", "El servicio del SAT no está disponible temporalmente.")
        return None

    @app.get("/cfdi33/stamp/status")
    async def status(customid: str | None = None, hash: str | None = None, authorization: str | None = Header(None)) -> JSONResponse:  # noqa: A002
        if not authorized(authorization):
            return _envelope(401, "error", TOKEN_INVALID)
        fault = await injected()
        if fault is not None:
            return fault
        counters["lookups"] += 1
        found = store.find(digest=hash, custom_id=customid) if (hash or customid) else None
        if found is None:
            return _envelope(404, "error", "No se encontró un timbre previo.")
        return _envelope(200, "success", None, data=found)

    async def stamp(xml: UploadFile, authorization: str | None = Header(None), customid: str | None = Header(None)) -> JSONResponse:
        counters["requests"] += 1
        if not authorized(authorization):
            return _envelope(401, "error", TOKEN_INVALID)
        fault = await injected()
        if fault is not None:
            return fault
        if faults.error_rate and random.random() < faults.error_rate:
            counters["faulted"] += 1
            return random.choice([
                _envelope(503, "error", "SAT no disponible", "El servicio del SAT no está disponible temporalmente."),
                _envelope(500, "error", "Error interno", "Ocurrió un error inesperado; intente de nuevo."),
            ])
        if faults.mode == "timeout":
            counters["faulted"] += 1
            await asyncio.sleep(faults.timeout_s)
            return _envelope(504, "error", "Tiempo de espera agotado", "El SAT no respondió a tiempo.")
        raw = await xml.read()
        digest = hashlib.sha256(raw).hexdigest()
        previous = store.find(digest=digest)
        if previous is not None:
            counters["duplicates"] += 1
            return _envelope(200, "error", TIMBRE_PREVIO, None, data=previous)
        if customid and len(customid) > 100:
            return _rejection("CFDI3301", "El customid excede 100 caracteres.")
        if customid and store.find(custom_id=customid) is not None:
            counters["rejected"] += 1
            return _rejection("CFDI3307", "Timbre duplicado: el customid ya se usó con un comprobante distinto.")
        root, problem = check(raw)
        if problem is not None:
            counters["rejected"] += 1
            return problem
        if faults.mode == "reject":
            counters["rejected"] += 1
            return _rejection(faults.reject_code, faults.reject_message)
        stamped, tfd = stamp_tfd(root, pac_csd, rfc_prov_certif=RFC_PROV_CERTIF)
        data = {
            "cadenaOriginalSAT": tfd.cadena,
            "noCertificadoSAT": tfd.NoCertificadoSAT,
            "noCertificadoCFDI": root.get("NoCertificado", ""),
            "uuid": tfd.UUID,
            "selloSAT": tfd.SelloSAT,
            "selloCFDI": tfd.SelloCFD,
            "fechaTimbrado": tfd.FechaTimbrado,
            "qrCode": "",
            "cfdi": stamped.decode(),
        }
        store.add(digest, customid, data)
        sat.register(facts_of_root(root, tfd.UUID))  # the stamped CFDI is the same document plus its TFD
        counters["stamped"] += 1
        if faults.mode == "timeout_after_stamp":
            counters["faulted"] += 1
            await asyncio.sleep(faults.timeout_s)
        return _envelope(200, "success", None, data=data)

    def check(raw: bytes) -> tuple[Any, JSONResponse | None]:
        """The parsed CFDI, and the first problem a PAC would find (with SAT's code) or None."""
        try:
            root = parse_xml(raw)
        except CfdiError as exc:
            return None, _rejection("301", "La estructura del comprobante es incorrecta.", exc.message)
        return root, _problem(root, raw)

    def _problem(root: Any, raw: bytes) -> JSONResponse | None:
        if root.tag != "{http://www.sat.gob.mx/cfd/4}Comprobante" or root.get("Version") != "4.0":
            return _rejection("301", "La estructura del comprobante es incorrecta.", "No es un CFDI 4.0.")
        if checks.xsd:
            from timbra_shared.cfdi.xsd import xsd_errors

            errors = xsd_errors(root)
            if errors:
                path, message = errors[0]
                return _rejection("301", "La estructura del comprobante es incorrecta.", f"{path}: {message}")
        fecha_problem = _check_fecha(root.get("Fecha", ""), root.get("LugarExpedicion", "06000"))
        if fecha_problem is not None:
            return _rejection("CFDI40101", fecha_problem)
        if checks.rules:
            findings = [f for f in validate(root, catalogs=True, check_dates=False) if f.severity == "error" and f.code.startswith("CFDI40")]
            if findings:
                first = findings[0]
                return _rejection(first.code, first.message, f"{first.path}: {first.message}")
            return None
        # fast path: the sello and the certificate's validity, without the catalogue rules
        result = verify(raw)
        if not result.valid:
            if "CFDI40106" in (result.reason or ""):
                return _rejection("CFDI40106", "El certificado no es válido.", result.reason)
            return _rejection("CFDI40102", "El resultado de la digestión debe ser igual al resultado de la desencripción del sello.", result.reason)
        return _check_certificate(root)

    async def cancel(rfc: str, uuid: str, motivo: str, folio: str | None = None, authorization: str | None = Header(None)) -> JSONResponse:
        sat.counters["cancel_calls"] += 1
        sat.calls[uuid.upper()] = sat.calls.get(uuid.upper(), 0) + 1
        if not authorized(authorization):
            return _envelope(401, "error", TOKEN_INVALID)
        fault = await injected()
        if fault is not None:
            return fault
        if faults.mode == "timeout":
            counters["faulted"] += 1
            await asyncio.sleep(faults.timeout_s)
            return _envelope(504, "error", "Tiempo de espera agotado", "El SAT no respondió a tiempo.")
        try:
            code, acuse = sat.cancel(rfc, uuid, motivo, folio)
        except Refused as refused:
            sat.counters["cancel_refused"] += 1
            return _envelope(400, "error", f"{refused.code} - {refused.message}", refused.detail)
        if faults.mode == "timeout_after_cancel":
            counters["faulted"] += 1
            await asyncio.sleep(faults.timeout_s)
        return _envelope(200, "success", None, data={"acuse": acuse.decode(), "uuid": {uuid.upper(): code}})

    app.add_api_route("/cfdi33/cancel/{rfc}/{uuid}/{motivo}", cancel, methods=["POST"])
    app.add_api_route("/cfdi33/cancel/{rfc}/{uuid}/{motivo}/{folio}", cancel, methods=["POST"])

    @app.post("/ConsultaCFDIService.svc")
    async def consulta(request: Request) -> Response:
        fault = await injected()
        if fault is not None:
            return fault
        expresion = sat_status.parse_request(await request.body())
        if expresion is None:
            return Response(b"", status_code=400)
        return Response(sat_status.response_envelope(sat.status_by_expression(expresion)), media_type="text/xml; charset=utf-8")

    @app.post("/acceptreject/{rfc}/{uuid}/{action}")
    async def accept_reject(rfc: str, uuid: str, action: str, authorization: str | None = Header(None)) -> JSONResponse:
        if not authorized(authorization):
            return _envelope(401, "error", TOKEN_INVALID)
        if action not in ("Aceptacion", "Rechazo"):
            return _envelope(400, "error", "1003 - La acción debe ser Aceptacion o Rechazo.")
        try:
            code = sat.answer(rfc, uuid, action == "Aceptacion")
        except Refused as refused:
            return _envelope(400, "error", f"{refused.code} - {refused.message}")
        return _envelope(200, "success", None, data={"folios": [{"uuid": uuid.upper(), "estatusUUID": code, "respuesta": action}]})

    @app.get("/pendings/{rfc}")
    async def pendings(rfc: str, authorization: str | None = Header(None)) -> JSONResponse:
        if not authorized(authorization):
            return _envelope(401, "error", TOKEN_INVALID)
        return _envelope(200, "success", None, data={"uuid": sat.pendings(rfc)})

    @app.get("/admin/cancellation-rules")
    async def get_rules() -> dict:
        return {key: asdict(rule) for key, rule in sat.rules.items()}

    @app.put("/admin/cancellation-rules")
    async def put_rule(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            key = str(body.get("key") or "").strip().upper()
            if not key:
                raise ValueError("key es obligatorio: un UUID, un RFC o *")
            sat.rules[key] = Rule.parse(body)
        except (ValueError, TypeError, AttributeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"key": key, **asdict(sat.rules[key])})

    @app.delete("/admin/cancellation-rules/{key}")
    async def delete_rule(key: str) -> dict:
        return {"deleted": sat.rules.pop(key.upper(), None) is not None}

    @app.get("/admin/cancellations/{uuid}")
    async def cancellation_info(uuid: str) -> JSONResponse:
        info = sat.info(uuid)
        return JSONResponse(info, status_code=200) if info is not None else JSONResponse({"error": "UUID desconocido"}, status_code=404)

    app.add_api_route("/cfdi33/stamp/v4", stamp, methods=["POST"])
    app.add_api_route("/v4/cfdi33/stamp/v4", stamp, methods=["POST"])
    app.add_middleware(StampRoute, handler=stamp, paths=("/cfdi33/stamp/v4", "/v4/cfdi33/stamp/v4"))
    return app


class StampRoute:
    """The stamp endpoint reached ahead of FastAPI's routing and dependency solving, which were
    about a tenth of the sandbox's CPU per stamp (py-spy during bench_stamping.py): the benchmarks
    measure the stamping service, and the sandbox shares its machine. Same handler, same answers
    (a missing ``xml`` part is FastAPI's 422, a body that is not multipart its 400); every other
    request goes through FastAPI."""

    def __init__(self, app: Any, *, handler: Any, paths: tuple[str, ...]) -> None:
        self.app, self.handler, self.paths = app, handler, paths

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            form = await request.form()
        except MultiPartException:
            await JSONResponse({"detail": "There was an error parsing the body"}, status_code=400)(scope, receive, send)
            return
        try:
            xml = form.get("xml")
            if isinstance(xml, StarletteUploadFile):
                response = await self.handler(xml, request.headers.get("authorization"), request.headers.get("customid"))
            else:
                response = JSONResponse({"detail": [{"type": "missing", "loc": ["body", "xml"], "msg": "Field required", "input": None}]}, status_code=422)
        finally:
            await form.close()
        await response(scope, receive, send)


def _check_certificate(root) -> JSONResponse | None:  # noqa: ANN001
    try:
        cert = embedded_certificate((root.get("Certificado") or "").strip()).certificate  # verify() just read it: cached
        fecha = datetime.fromisoformat(root.get("Fecha", ""))
    except Exception:
        return _rejection("CFDI40106", "El certificado no es válido.")
    # SAT compares Fecha (local time of LugarExpedicion) with the validity; an hour's slack is ignored
    if not (cert.not_valid_before_utc.replace(tzinfo=None) - timedelta(hours=6) <= fecha <= cert.not_valid_after_utc.replace(tzinfo=None)):
        return _rejection("CFDI40106", "La Fecha del comprobante está fuera de la vigencia del certificado.")
    return None


def _check_fecha(fecha: str, lugar: str) -> str | None:
    try:
        issued = datetime.fromisoformat(fecha)
    except ValueError:
        return "El campo Fecha no cumple con el patrón requerido."
    now = now_local(lugar).replace(tzinfo=None)
    if issued - now > FUTURE_TOLERANCE:
        return "El campo Fecha no debe ser posterior a la fecha y hora de la certificación."
    if now - issued > WINDOW:
        return "El campo Fecha excede las 72 horas previas a la certificación."
    return None


async def _refuse(app: FastAPI, faults: Faults, counters: dict[str, int]) -> None:
    """Connection refused for ``refuse_for_s``: stop listening and drop every open connection."""
    server = app.state.server
    if server is None:
        return
    config = server.config
    for listener in server.servers:
        listener.close()
    for connection in list(server.server_state.connections):
        counters["refused_connections"] += 1
        transport = getattr(connection, "transport", None)
        if transport is not None:
            transport.abort()
    await asyncio.sleep(faults.refuse_for_s)
    loop = asyncio.get_running_loop()

    def protocol() -> asyncio.Protocol:
        return config.http_protocol_class(config=config, server_state=server.server_state, app_state=server.lifespan.state, _loop=loop)

    while True:
        try:
            server.servers = [await loop.create_server(protocol, host=config.host, port=config.port, backlog=config.backlog)]
            break
        except OSError:
            await asyncio.sleep(0.2)
    if faults.mode == "refuse":
        faults.mode = "none"
