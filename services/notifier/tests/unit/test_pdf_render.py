"""The real renderer (weasyprint): what the printed invoice shows, read back with poppler."""

import io
import shutil
import subprocess
import tempfile
from pathlib import Path
from datetime import UTC, datetime

import pytest

from timbra_notifier.adapters.renderer import WeasyprintRenderer
from timbra_notifier.domain.printed import CANCELADO, SIN_VALIDEZ, printed_context

pytestmark = pytest.mark.skipif(not shutil.which("pdftotext") or not shutil.which("pdftoppm"), reason="poppler-utils (pdftotext, pdftoppm) not installed")


@pytest.fixture(scope="module")
def renderer() -> WeasyprintRenderer:
    return WeasyprintRenderer()


def text_of(pdf: bytes, *args: str) -> str:
    return subprocess.run(["pdftotext", "-layout", *args, "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()


def pages_of(pdf: bytes) -> int:
    out = subprocess.run(["pdfinfo", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    return int(next(line.split()[-1] for line in out.splitlines() if line.startswith("Pages:")))


def raster(pdf: bytes, dpi: int) -> "Image.Image":
    """The first page as a picture (pdftoppm), as a PIL image."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "in.pdf"
        source.write_bytes(pdf)
        subprocess.run(["pdftoppm", "-png", "-r", str(dpi), "-singlefile", str(source), str(Path(folder) / "page")], check=True, capture_output=True)
        return Image.open(Path(folder) / "page.png").convert("RGB")


def long_invoice(concepts: int) -> bytes:
    from timbra_shared.cfdi import Comprobante, Concepto, Emisor, Receptor, Traslado, build, fecha_local, load_csd, seal_xml, to_xml
    from timbra_shared.cfdi.testing import make_csd
    from timbra_shared.cfdi.tfd import stamp

    comprobante = Comprobante(
        Emisor=Emisor(Rfc="EKU9003173C9", Nombre="ESCUELA KEMPER URGATE", RegimenFiscal="601"),
        Receptor=Receptor(Rfc="URE180429TM6", Nombre="UNIVERSIDAD ROBOTICA ESPAÑOLA", DomicilioFiscalReceptor="86991", RegimenFiscalReceptor="601", UsoCFDI="G03"),
        LugarExpedicion="42501", Fecha=fecha_local("42501", datetime.now(UTC)), Serie="F", Folio="7", FormaPago="03", MetodoPago="PUE",
        Conceptos=[Concepto(ClaveProdServ="86121500", Cantidad="1", ClaveUnidad="E48", Descripcion=f"Colegiatura del niño número {n + 1}, año escolar",
                            ValorUnitario="100.00", Traslados=[Traslado(TasaOCuota="0.160000")]) for n in range(concepts)],
    )
    cer, key = make_csd()
    sealed = seal_xml(to_xml(build(comprobante)), load_csd(cer, key, b"12345678a"))
    pac_cer, pac_key = make_csd("SPR190613I52", "SANDBOX PAC")
    return stamp(sealed, load_csd(pac_cer, pac_key, b"12345678a"), rfc_prov_certif="SPR190613I52")[0]


def test_a_stamped_invoice_shows_what_the_sat_requires(renderer, stamped_xml):
    context = printed_context(stamped_xml, notes="Pago en la caja de la escuela. Gracias.")
    pdf = renderer.render(context)
    text = text_of(pdf)
    flat = " ".join(text.split())
    tfd, c = context["tfd"], context["c"]
    assert pages_of(pdf) == 1
    for expected in (
        tfd["UUID"], c["NoCertificado"], tfd["NoCertificadoSAT"], tfd["FechaTimbrado"], "ESCUELA KEMPER URGATE", "EKU9003173C9",
        "UNIVERSIDAD ROBOTICA ESPAÑOLA", "URE180429TM6", "Factura F1", "86121500", "E48", "Colegiatura", "562.50", "1125.00", "180.00",
        "1305.00 MXN", "UN MIL TRESCIENTOS CINCO PESOS 00/100 M.N.", "G03 - Gastos en general", "PUE - Pago en una sola exhibición",
        "01 - Efectivo", "Pago en la caja de la escuela. Gracias.", "Desglose de impuestos por partida", "Régimen fiscal: 601 - General de Ley Personas Morales",
    ):
        assert expected in flat, expected
    seals = "".join(text.split())  # the seals are printed in fixed lines
    assert c["Sello"] in seals and tfd["SelloSAT"] in seals and context["cadena_tfd"].replace(" ", "") in seals
    assert CANCELADO not in flat and SIN_VALIDEZ not in flat


def test_the_qr_in_the_pdf_decodes_to_the_sat_verification_url(renderer, stamped_xml):
    zxingcpp = pytest.importorskip("zxingcpp")

    context = printed_context(stamped_xml)
    barcodes = zxingcpp.read_barcodes(raster(renderer.render(context), 150))
    assert [b.text for b in barcodes if b.format == zxingcpp.BarcodeFormat.QRCode] == [context["verification_url"]]


def test_cancelled_and_preview_marks(renderer, stamped_xml):
    assert CANCELADO in text_of(renderer.render(printed_context(stamped_xml, watermark=CANCELADO)))
    assert SIN_VALIDEZ in text_of(renderer.render(printed_context(stamped_xml, watermark=SIN_VALIDEZ)))


def test_logo_placement(renderer, stamped_xml):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), (255, 0, 0)).save(buffer, "PNG")
    import base64

    logo = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    lefts = {}
    for placement in ("left", "center", "right"):
        image = raster(renderer.render(printed_context(stamped_xml, logo=logo, logo_placement=placement)), 40)
        red = [x for x in range(image.width) for y in range(0, image.height // 6) if image.getpixel((x, y)) == (255, 0, 0)]
        assert red, placement
        lefts[placement] = min(red)
    assert lefts["left"] < lefts["center"] < lefts["right"]


def test_200_concepts_paginate_with_repeated_headers(renderer):
    pdf = renderer.render(printed_context(long_invoice(200)))
    pages = pages_of(pdf)
    assert pages >= 4
    for page in range(1, pages + 1):
        text = text_of(pdf, "-f", str(page), "-l", str(page))
        if "Colegiatura del niño" in text:  # a page of the concepts table repeats its header
            assert "Descripción" in text and "P. unitario" in text, page
        assert f"Página {page}" in text
    everything = text_of(pdf)
    assert all(f"niño número {n}," in everything for n in (1, 100, 200))
    assert "23200.00 MXN" in " ".join(everything.split())


def test_the_print_ua_stylesheet_looks_exactly_like_weasyprints_html5_sheet(renderer, stamped_xml):
    """print_ua.css replaces weasyprint's HTML5 UA sheet for speed; an element added to the template
    without its rule there would change the picture, and this test would see it."""
    import base64

    import weasyprint
    from PIL import Image, ImageChops

    full_ua = WeasyprintRenderer()
    full_ua._html = weasyprint.HTML
    assert renderer._html is not weasyprint.HTML
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), (255, 0, 0)).save(buffer, "PNG")
    logo = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    for context in (printed_context(long_invoice(12), logo=logo, logo_placement="left", watermark=CANCELADO),
                    printed_context(stamped_xml, logo=logo, logo_placement="center", notes="Entrega en almacén\nPago a 30 días")):
        ours, weasyprints = raster(renderer.render(context), 70), raster(full_ua.render(context), 70)
        assert ours.size == weasyprints.size
        assert ImageChops.difference(ours, weasyprints).getbbox() is None


def fonts_of(pdf: bytes) -> set[str]:
    out = subprocess.run(["pdffonts", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    return {line.split()[0] for line in out.splitlines()[2:] if line.strip()}


def test_the_seals_are_drawn_with_pdfs_courier_where_weasyprint_would_have_put_them(renderer, stamped_xml):
    """The overlay path is taken (an update of weasyprint that broke it would fall back silently)
    and it changes nothing but the seal block: the rest of the page is pixel-identical, and the
    seal ink covers the same rows and columns within a pixel or two."""
    from PIL import ImageChops

    context = printed_context(stamped_xml)
    ours, classic = renderer.render(context), WeasyprintRenderer(seal_overlay=False).render(context)  # seals as text
    assert "Courier" in fonts_of(ours) and "Courier" not in fonts_of(classic)
    a, b = raster(ours, 100), raster(classic, 100)
    assert a.size == b.size
    changed = ImageChops.difference(a, b).getbbox()
    assert changed is not None  # the glyphs differ a little (Courier as the viewer has it)
    ink_a = ImageChops.invert(a.crop(changed).convert("L")).getbbox()
    ink_b = ImageChops.invert(b.crop(changed).convert("L")).getbbox()
    assert all(abs(p - q) <= 3 for p, q in zip(ink_a, ink_b, strict=True)), (ink_a, ink_b)
    width, height = a.size
    assert changed[0] > width * 0.15 and changed[1] > height * 0.3  # beside the QR, below the totals
    assert changed[3] - changed[1] < height * 0.15


def test_the_overlay_lands_on_the_last_page_of_a_long_invoice(renderer):
    context = printed_context(long_invoice(30))
    pdf = renderer.render(context)
    pages = pages_of(pdf)
    assert pages >= 2 and "Courier" in fonts_of(pdf)
    last = "".join(text_of(pdf, "-f", str(pages), "-l", str(pages)).split())
    assert context["c"]["Sello"] in last and context["tfd"]["SelloSAT"] in last
    assert context["c"]["Sello"][:40] not in "".join(text_of(pdf, "-f", "1", "-l", str(pages - 1)).split())


def test_seals_courier_cannot_print_are_laid_out_as_text(renderer, stamped_xml):
    context = printed_context(stamped_xml)
    context["seal_block"] = [*context["seal_block"][:-1], context["seal_block"][-1] + "≠"]  # outside WinAnsi
    pdf = renderer.render(context)
    assert "Courier" not in fonts_of(pdf)
    assert "≠" in text_of(pdf)


def _every_branch_of_the_template(stamped_xml: bytes) -> list[dict]:
    """Contexts that between them take every branch of invoice.html (logos, marks, notes with
    markup characters, a long table, Pagos 2.0 with its own table, CFDI relacionados)."""
    import base64

    from PIL import Image

    from timbra_shared.cfdi import Comprobante, DoctoRelacionado, Emisor, Pago, Pagos, Receptor, TrasladoDR, build, to_xml

    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), (255, 0, 0)).save(buffer, "PNG")
    logo = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    pagos = Comprobante(
        Emisor=Emisor(Rfc="EKU9003173C9", Nombre="ESCUELA KEMPER URGATE", RegimenFiscal="601"),
        Receptor=Receptor(Rfc="URE180429TM6", Nombre="UNIVERSIDAD ROBOTICA ESPAÑOLA", DomicilioFiscalReceptor="86991", RegimenFiscalReceptor="601", UsoCFDI="CP01"),
        LugarExpedicion="42501", TipoDeComprobante="P", Moneda="XXX",
        Pagos=Pagos(Pago=[Pago(FechaPago="2025-01-10T12:00:00", FormaDePagoP="03", MonedaP="MXN", TipoCambioP="1", DoctoRelacionado=[
            DoctoRelacionado(IdDocumento="5FB2822E-396D-4725-8521-CDC4BDD20CCF", MonedaDR="MXN", NumParcialidad=1, ImpSaldoAnt="1305.00", ImpPagado="1000.00",
                             Serie="F", Folio="1", TrasladosDR=[TrasladoDR(BaseDR="862.068966", TasaOCuotaDR="0.160000")]),
        ])]),
    )
    return [
        printed_context(long_invoice(12), logo=logo, logo_placement="left", watermark=CANCELADO),
        printed_context(stamped_xml, logo=logo, logo_placement="center", notes="Entrega en almacén <b>&amp;</b> \"pago\"\nPago a 30 días"),
        printed_context(stamped_xml, logo=logo, logo_placement="right", watermark=SIN_VALIDEZ),
        printed_context(to_xml(build(pagos))),
    ]


def test_the_xhtml_parse_gives_the_same_pages_as_the_html5_parser(renderer, stamped_xml, monkeypatch):
    import weasyprint
    from PIL import ImageChops

    html5 = WeasyprintRenderer(xhtml=False)
    parsed: list[int] = []
    real_parse = weasyprint.tinyhtml5.parse

    def counting_parse(source, **options):  # noqa: ANN001, ANN202
        parsed.append(len(source.getvalue() if hasattr(source, "getvalue") else source))
        return real_parse(source, **options)

    monkeypatch.setattr(weasyprint.tinyhtml5, "parse", counting_parse)
    for context in _every_branch_of_the_template(stamped_xml):
        parsed.clear()
        ours = renderer.render(context)
        assert all(size < 100 for size in parsed), parsed  # only the placeholder went through the HTML5 parser
        theirs = html5.render(context)
        assert max(parsed) > 1000  # the comparison did parse the whole page as HTML5
        a, b = raster(ours, 70), raster(theirs, 70)
        assert a.size == b.size and ImageChops.difference(a, b).getbbox() is None


def test_a_pdf_without_the_expected_structure_gets_the_seals_as_text(renderer, stamped_xml, monkeypatch):
    """If a weasyprint release shapes its PDF differently, the overlay gives up and the seals are
    laid out by weasyprint, rather than the render failing or the seals going missing."""
    from timbra_notifier.adapters import renderer as module

    monkeypatch.setattr(module, "_resolve", lambda pdf, value: {})  # neither a stream nor a font dictionary
    context = printed_context(stamped_xml)
    pdf = renderer.render(context)
    assert "Courier" not in fonts_of(pdf)
    assert context["c"]["Sello"] in "".join(text_of(pdf).split())
