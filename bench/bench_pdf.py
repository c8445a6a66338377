"""PDF rendering: a naive weasyprint render and Timbra's renderer, side by side in one run.

    .venv/bin/python bench/bench_pdf.py [--renders 30] [--concepts 1] [--long 200]

Both render the same stamped CFDI (built with the CFDI core, sealed with a test CSD, stamped with a
test PAC certificate) in a warm process (3 untimed renders first), alternating the contenders
render by render (in an order that rotates every round) so that all see the same machine load. For each it prints the median and p90 of
wall-clock time and of process CPU time per render, and the ratio. On a shared, busy machine the
wall figure includes time spent waiting for a core; the CPU figure is the renderer's own work.

"Naive" is what a first implementation does: the notifier's original template (flexbox header,
auto-layout table, seals broken into <div>s by a Jinja filter, the QR as an SVG path), rendered with
``HTML(string=...).write_pdf()`` and nothing reused between renders. "Timbra" is
``timbra_notifier.adapters.renderer.WeasyprintRenderer`` with ``printed_context``; "Timbra, HTML5
UA" is the same with weasyprint's whole HTML5 user-agent sheet instead of ``print_ua.css``;
"Timbra, seals as text" lets weasyprint lay the seals out instead of drawing them with PDF's
Courier into an empty box (``SealOverlay``); "Timbra, HTML5 parser" reads the template's output
with weasyprint's HTML5 parser instead of expat.

It also renders a long invoice (--long concepts, 0 to skip) once with Timbra's renderer and prints
its page count and time. Then Timbra's renderer renders the one-page invoice --renders times back
to back, as in the notifier's process. The last line is ``pdf_render_median_ms=<Timbra's CPU
median, interleaved> pdf_render_alone_median_ms=<the same, back to back>``.
"""

import argparse
import base64
import io
import shutil
import subprocess
import statistics
import time
from datetime import UTC, datetime

import jinja2
import qrcode
import qrcode.image.svg

from timbra_notifier.adapters.renderer import WeasyprintRenderer
from timbra_notifier.domain.printed import printed_context, verification_url
from timbra_shared.cfdi import Comprobante, Concepto, Emisor, Receptor, Traslado, build, fecha_local, load_csd, seal_xml, to_xml
from timbra_shared.cfdi.testing import make_csd
from timbra_shared.cfdi.tfd import stamp

NAIVE_TEMPLATE = """<!doctype html>
<html lang="es"><head><meta charset="utf-8"><style>
@page { size: letter; margin: 14mm 12mm; @bottom-right { content: "Página " counter(page) " de " counter(pages); font-size: 7pt; color: #666; } }
body { font-family: "DejaVu Sans", sans-serif; font-size: 8pt; color: #222; }
h1 { font-size: 13pt; margin: 0; } .muted { color: #666; }
.head { display: flex; justify-content: space-between; border-bottom: 2px solid #1f4e79; padding-bottom: 4px; }
table { width: 100%; border-collapse: collapse; margin-top: 6px; } thead { display: table-header-group; }
th { background: #1f4e79; color: #fff; font-weight: normal; text-align: left; padding: 2px 3px; }
td { border-bottom: 1px solid #ddd; padding: 2px 3px; vertical-align: top; } .num { text-align: right; white-space: nowrap; }
.totals { width: 40%; margin-left: 60%; } .seal { font-family: "DejaVu Sans Mono", monospace; font-size: 5.5pt; white-space: nowrap; }
.stamp { display: flex; gap: 8px; margin-top: 8px; } .stamp img { width: 28mm; height: 28mm; }
</style></head><body>
<div class="head"><div><h1>{{ emisor.Nombre }}</h1><div>RFC {{ emisor.Rfc }} · Régimen {{ emisor.RegimenFiscal }}</div><div class="muted">Lugar de expedición {{ c.LugarExpedicion }}</div></div>
<div style="text-align:right"><h1>{{ tipo_nombre }} {{ c.Serie or "" }}{{ c.Folio or "" }}</h1><div>Fecha {{ c.Fecha }}</div><div>Folio fiscal {{ tfd.UUID or "—" }}</div></div></div>
<p><b>Receptor:</b> {{ receptor.Nombre }} · RFC {{ receptor.Rfc }} · CP {{ receptor.DomicilioFiscalReceptor }} · Régimen {{ receptor.RegimenFiscalReceptor }} · Uso CFDI {{ receptor.UsoCFDI }}</p>
<table><thead><tr><th>#</th><th>Clave</th><th>Unidad</th><th>Descripción</th><th class="num">Cantidad</th><th class="num">P. unitario</th><th class="num">Descuento</th><th class="num">Importe</th></tr></thead><tbody>
{% for k in conceptos %}<tr><td>{{ loop.index }}</td><td>{{ k.ClaveProdServ }}</td><td>{{ k.ClaveUnidad }}</td><td>{{ k.Descripcion }}{% for t in k.impuestos %}<br><span class="muted">{{ t }}</span>{% endfor %}</td><td class="num">{{ k.Cantidad }}</td><td class="num">{{ k.ValorUnitario }}</td><td class="num">{{ k.Descuento or "" }}</td><td class="num">{{ k.Importe }}</td></tr>{% endfor %}
</tbody></table>
<table class="totals"><tr><td>Subtotal</td><td class="num">{{ c.SubTotal }}</td></tr>
{% if impuestos.TotalImpuestosTrasladados %}<tr><td>Impuestos trasladados</td><td class="num">{{ impuestos.TotalImpuestosTrasladados }}</td></tr>{% endif %}
<tr><td><b>Total</b></td><td class="num"><b>{{ c.Total }} {{ c.Moneda }}</b></td></tr></table>
<p><b>Importe con letra:</b> {{ total_letra }}</p>
<p>Método de pago {{ c.MetodoPago or "—" }} · Forma de pago {{ c.FormaPago or "—" }} · Moneda {{ c.Moneda }}</p>
<div class="stamp">{% if qr %}<img src="{{ qr }}">{% endif %}<div style="flex:1">
<div>No. de serie del CSD del emisor: {{ c.NoCertificado }} · No. de serie del certificado SAT: {{ tfd.NoCertificadoSAT }} · Fecha de timbrado: {{ tfd.FechaTimbrado }}</div>
<div><b>Sello digital del CFDI</b><div class="seal">{% for line in c.Sello|batch(110) %}<div>{{ line|join }}</div>{% endfor %}</div></div>
<div><b>Sello del SAT</b><div class="seal">{% for line in tfd.SelloSAT|batch(110) %}<div>{{ line|join }}</div>{% endfor %}</div></div>
<div><b>Cadena original del complemento de certificación digital del SAT</b><div class="seal">{% for line in cadena_tfd|batch(110) %}<div>{{ line|join }}</div>{% endfor %}</div></div>
</div></div>
<p class="muted">Este documento es una representación impresa de un CFDI 4.0.</p>
</body></html>"""


def stamped_invoice(concepts: int) -> bytes:
    comprobante = Comprobante(
        Emisor=Emisor(Rfc="EKU9003173C9", Nombre="ESCUELA KEMPER URGATE", RegimenFiscal="601"),
        Receptor=Receptor(Rfc="URE180429TM6", Nombre="UNIVERSIDAD ROBOTICA ESPAÑOLA", DomicilioFiscalReceptor="86991", RegimenFiscalReceptor="601", UsoCFDI="G03"),
        LugarExpedicion="42501",
        Fecha=fecha_local("42501", datetime.now(UTC)),
        Serie="F",
        Folio="1",
        FormaPago="01",
        MetodoPago="PUE",
        Conceptos=[
            Concepto(ClaveProdServ="86121500", Cantidad="2", ClaveUnidad="E48", Descripcion=f"Colegiatura de niño, año escolar {n + 1}", ValorUnitario="562.50",
                     Traslados=[Traslado(Impuesto="002", TipoFactor="Tasa", TasaOCuota="0.160000")])
            for n in range(concepts)
        ],
    )
    cer, key = make_csd()
    sealed = seal_xml(to_xml(build(comprobante)), load_csd(cer, key, b"12345678a"))
    pac_cer, pac_key = make_csd("SPR190613I52", "SANDBOX PAC")
    stamped, _ = stamp(sealed, load_csd(pac_cer, pac_key, b"12345678a"), rfc_prov_certif="SPR190613I52")
    return stamped


class NaiveRenderer:
    """A first implementation: SVG QR, the original template, nothing reused between renders."""

    def __init__(self) -> None:
        import weasyprint

        self.weasyprint = weasyprint
        self.template = jinja2.Environment(autoescape=True).from_string(NAIVE_TEMPLATE)

    def render(self, xml: bytes) -> bytes:
        context = printed_context(xml)
        c, tfd = context["c"], context["tfd"]
        url = verification_url(tfd["UUID"], context["emisor"]["Rfc"], context["receptor"]["Rfc"], c["Total"], c["Sello"])
        image = qrcode.make(url, image_factory=qrcode.image.svg.SvgPathImage, box_size=10, border=1)
        buffer = io.BytesIO()
        image.save(buffer)
        context["qr"] = "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()
        return self.weasyprint.HTML(string=self.template.render(**context)).write_pdf()


class TimbraRenderer:
    def __init__(self, *, html5_ua: bool = False, seal_overlay: bool = True, xhtml: bool = True) -> None:
        self.renderer = WeasyprintRenderer(seal_overlay=seal_overlay, xhtml=xhtml)
        if html5_ua:  # weasyprint's whole HTML5 user-agent sheet instead of print_ua.css
            import weasyprint

            self.renderer._html = weasyprint.HTML

    def render(self, xml: bytes) -> bytes:
        return self.renderer.render(printed_context(xml))


def _timed(render, xml: bytes) -> tuple[float, float, bytes]:
    wall, cpu = time.perf_counter(), time.process_time()
    pdf = render(xml)
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000, pdf


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(round(0.9 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--renders", type=int, default=30)
    parser.add_argument("--concepts", type=int, default=1)
    parser.add_argument("--long", type=int, default=200)
    args = parser.parse_args()

    xml = stamped_invoice(args.concepts)
    contenders = {"naive weasyprint": NaiveRenderer(), "Timbra, HTML5 UA": TimbraRenderer(html5_ua=True),
                  "Timbra, seals as text": TimbraRenderer(seal_overlay=False), "Timbra, HTML5 parser": TimbraRenderer(xhtml=False),
                  "Timbra renderer": TimbraRenderer()}
    for renderer in contenders.values():  # warm: imports, fonts, caches
        for _ in range(3):
            renderer.render(xml)
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    cpus: dict[str, list[float]] = {name: [] for name in contenders}
    sizes: dict[str, int] = {}
    names = list(contenders)
    for round_ in range(args.renders):
        # the order rotates every round: the render after another one's garbage pays for its
        # collection, and no contender should always be in that place
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            wall, cpu, pdf = _timed(contenders[name].render, xml)
            walls[name].append(wall)
            cpus[name].append(cpu)
            sizes[name] = len(pdf)

    print(f"one-page invoice ({args.concepts} concept(s)), {args.renders} warm renders each, interleaved")
    print(f"{'':22} {'CPU median':>11} {'CPU p90':>9} {'wall median':>12} {'wall p90':>9} {'PDF bytes':>10}")
    for name in contenders:
        print(f"{name:22} {statistics.median(cpus[name]):9.1f}ms {_p90(cpus[name]):7.1f}ms {statistics.median(walls[name]):10.1f}ms {_p90(walls[name]):7.1f}ms {sizes[name]:10d}")
    naive, timbra = "naive weasyprint", "Timbra renderer"
    print(f"ratio naive/Timbra: CPU {statistics.median(cpus[naive]) / statistics.median(cpus[timbra]):.1f}x, "
          f"wall {statistics.median(walls[naive]) / statistics.median(walls[timbra]):.1f}x; "
          f"print_ua.css/HTML5 UA sheet: CPU {statistics.median(cpus[timbra]) / statistics.median(cpus['Timbra, HTML5 UA']):.2f}x; "
          f"Courier overlay/seals as text: CPU {statistics.median(cpus[timbra]) / statistics.median(cpus['Timbra, seals as text']):.2f}x; "
          f"expat/HTML5 parser: CPU {statistics.median(cpus[timbra]) / statistics.median(cpus['Timbra, HTML5 parser']):.2f}x")

    # the notifier's process renders only with Timbra's renderer: the same renders back to back,
    # without the other contenders' allocations in between
    alone = [_timed(contenders[timbra].render, xml)[1] for _ in range(args.renders)]
    print(f"Timbra renderer alone, {args.renders} renders back to back: CPU median {statistics.median(alone):.1f} ms, p90 {_p90(alone):.1f} ms")

    if args.long:
        long_xml = stamped_invoice(args.long)
        wall, cpu, pdf = _timed(contenders[timbra].render, long_xml)
        info = subprocess.run(["pdfinfo", "-"], input=pdf, capture_output=True, text=False).stdout.decode() if shutil.which("pdfinfo") else ""
        pages = next((line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")), "?")
        print(f"long invoice ({args.long} concepts): {pages} pages, CPU {cpu:.0f} ms, wall {wall:.0f} ms")
    print(f"pdf_render_median_ms={statistics.median(cpus[timbra]):.1f} pdf_render_alone_median_ms={statistics.median(alone):.1f}")


if __name__ == "__main__":
    main()
