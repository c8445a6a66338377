"""The sandbox PAC's HTTP API.

- ``POST /cfdi33/stamp/v4`` (multipart ``xml``; header ``customid`` optional): stamp.
- ``GET /cfdi33/stamp/status?customid=…`` or ``?hash=…``: a previous stamp.
- ``GET /certificate``: the DER certificate that signs SelloSAT.
- ``PUT /admin/faults``: fault injection at runtime (outage, latency, timeout after stamping, error rate).
Responses use SW's envelope ``{status, message, messageDetail, data}``.
"""

import asyncio
import hashlib
import os
import random
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from fastapi import FastAPI, Header, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from timbra_shared.cfdi import load_csd, parse_xml, verify
from timbra_shared.cfdi.errors import CfdiError
from timbra_shared.cfdi.fecha import now_local
from timbra_shared.cfdi.testing import make_csd
from timbra_shared.cfdi.tfd import stamp as stamp_tfd
from timbra_shared.sandbox_pac.store import StampStore

RFC_PROV_CERTIF = "SAT970701NN3"
WINDOW = timedelta(hours=72)


@dataclass
class Faults:
    mode: str = "none"  # none | outage | timeout_after_stamp | error
    latency_ms: int = 0
    error_rate: float = 0.0
    timeout_s: float = 15.0


def _envelope(status_code: int, status: str, message: str, detail: str = "", data: dict | None = None) -> JSONResponse:
    return JSONResponse({"status": status, "message": message, "messageDetail": detail, "data": data}, status_code=status_code)


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


def create_app(data_dir: str, token: str = "sandbox-token", *, validate_xsd: bool = False) -> FastAPI:
    app = FastAPI(title="Timbra sandbox PAC")
    folder = os.path.join(data_dir, "sandbox-pac")
    certificate_der, pac_csd = load_or_create_certificate(folder)
    store = StampStore(os.path.join(folder, "stamps.db"))
    faults = Faults()
    counters = {"requests": 0, "stamped": 0, "duplicates": 0, "rejected": 0, "faulted": 0}

    def authorized(authorization: str | None) -> bool:
        return authorization == f"Bearer {token}"

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True, "stamps": store.count(), **counters, "faults": asdict(faults)}

    @app.get("/certificate")
    async def certificate() -> Response:
        return Response(certificate_der, media_type="application/pkix-cert")

    @app.put("/admin/faults")
    async def set_faults(request: Request) -> dict:
        body = await request.json()
        for name, value in body.items():
            if hasattr(faults, name):
                setattr(faults, name, type(getattr(faults, name))(value))
        return asdict(faults)

    @app.get("/cfdi33/stamp/status")
    async def status(customid: str | None = None, hash: str | None = None, authorization: str | None = Header(None)) -> JSONResponse:  # noqa: A002
        if not authorized(authorization):
            return _envelope(401, "error", "AU4101 - El token proporcionado no es válido.")
        found = store.find(digest=hash, custom_id=customid) if (hash or customid) else None
        if found is None:
            return _envelope(404, "error", "No se encontró un timbre previo.")
        return _envelope(200, "success", "", data=found)

    @app.post("/cfdi33/stamp/v4")
    async def stamp(xml: UploadFile, authorization: str | None = Header(None), customid: str | None = Header(None)) -> JSONResponse:
        counters["requests"] += 1
        if not authorized(authorization):
            return _envelope(401, "error", "AU4101 - El token proporcionado no es válido.")
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.mode == "outage" or (faults.mode == "error" and random.random() < faults.error_rate):
            counters["faulted"] += 1
            return _envelope(503, "error", "SAT no disponible", "El servicio del SAT no está disponible temporalmente.")
        raw = await xml.read()
        digest = hashlib.sha256(raw).hexdigest()
        previous = store.find(digest=digest)
        if previous is not None:
            counters["duplicates"] += 1
            return _envelope(200, "error", "307. El comprobante contiene un timbre previo.", data=previous)
        try:
            root = parse_xml(raw)
        except CfdiError as exc:
            counters["rejected"] += 1
            return _envelope(400, "error", f"301. XML mal formado: {exc.message}")
        result = verify(raw)
        if not result.valid:
            counters["rejected"] += 1
            return _envelope(400, "error", "CFDI40102 - El resultado de la digestión debe ser igual al resultado de la desencripción del sello.", result.reason or "")
        problem = _check_fecha(root.get("Fecha", ""), root.get("LugarExpedicion", "06000"))
        if problem:
            counters["rejected"] += 1
            return _envelope(400, "error", problem)
        stamped, tfd = stamp_tfd(root, pac_csd, rfc_prov_certif=RFC_PROV_CERTIF)
        cfdi = stamped.decode()
        store.add(digest, customid, tfd.UUID, tfd.FechaTimbrado, cfdi)
        counters["stamped"] += 1
        data = {"cfdi": cfdi, "uuid": tfd.UUID, "fechaTimbrado": tfd.FechaTimbrado, "noCertificadoSAT": tfd.NoCertificadoSAT, "selloSAT": tfd.SelloSAT, "selloCFDI": tfd.SelloCFD}
        if faults.mode == "timeout_after_stamp":
            counters["faulted"] += 1
            await asyncio.sleep(faults.timeout_s)
        return _envelope(200, "success", "", data=data)

    return app


def _check_fecha(fecha: str, lugar: str) -> str | None:
    try:
        issued = datetime.fromisoformat(fecha)
    except ValueError:
        return "CFDI40101 - El campo Fecha no cumple con el patrón requerido."
    now = now_local(lugar).replace(tzinfo=None)
    if issued - now > timedelta(minutes=5):
        return "CFDI40101 - El campo Fecha no debe ser posterior a la fecha y hora de la certificación."
    if now - issued > WINDOW:
        return "CFDI40101 - El campo Fecha excede las 72 horas previas a la certificación."
    return None
