"""PDF rendering with weasyprint.

What makes it fast (see docs/notifier.md, "Performance", and bench/bench_pdf.py):
- the Jinja2 template is compiled and the stylesheet parsed once per process (one ``CSS`` object
  and one ``FontConfiguration`` shared by every render);
- the layout uses no flexbox, fixed-layout tables and simple class selectors;
- one font family (DejaVu: sans in two weights, mono for the tax breakdown per line);
- the seals (1,100 characters of base64 and the TFD cadena) are not laid out by weasyprint at all:
  the page keeps an empty box of their height, and :class:`SealOverlay` writes their fixed lines
  into it with PDF's built-in Courier, one text operator per line (no shaping, no glyph-by-glyph
  drawing, no font to embed); the QR is a small 1-bit PNG drawn without interpolation;
- fonts are subset natively by HarfBuzz (Debian's libharfbuzz-subset0, installed by ``make install``);
- the template writes well-formed XHTML, which expat parses in a tenth of the time of weasyprint's
  pure-Python HTML5 parser (``parse``; the HTML5 parser remains the fallback);
- the user-agent stylesheet is ``print_ua.css``, the few HTML5 rules the template needs, instead of
  weasyprint's whole HTML5 sheet that every element is matched against.
"""

import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2

SEAL_FONT_PT = 5.6  # .seal in invoice.css
SEAL_LINE_HEIGHT = 1.2
COURIER_ASCENT, COURIER_DESCENT = 0.629, 0.157  # Adobe's Courier metrics, per em
SEAL_FONT = "TimbraSealCourier"


def _read(name: str) -> str:
    return resources.files("timbra_notifier").joinpath(f"templates/{name}").read_text(encoding="utf-8")


class WeasyprintRenderer:
    def __init__(self, *, seal_overlay: bool = True, xhtml: bool = True) -> None:
        import cssselect2
        import weasyprint  # heavy import: only in processes that render
        from weasyprint.text.fonts import FontConfiguration

        self._weasyprint = weasyprint
        self._element_wrapper = cssselect2.ElementWrapper
        self._template = jinja2.Environment(autoescape=True, trim_blocks=False).from_string(_read("invoice.html"))
        self._fonts = FontConfiguration()
        self._css = weasyprint.CSS(string=_read("invoice.css"), font_config=self._fonts)
        ua = [weasyprint.CSS(string=_read("print_ua.css"), font_config=self._fonts)]

        class PrintedHTML(weasyprint.HTML):
            # weasyprint's hook for the UA sheets; if a release renames it, the full HTML5 sheet applies (slower, same look)
            def _ua_stylesheets(self, forms: bool = False) -> list[Any]:
                return ua

        self._html = PrintedHTML
        self.seal_overlay = seal_overlay  # False: weasyprint lays the seals out as text (comparisons)
        self.xhtml = xhtml  # False: weasyprint's HTML5 parser reads the template's output (comparisons)
        self._lock = threading.Lock()  # one render at a time per process: weasyprint's caches are not thread-safe

    def html(self, context: dict[str, Any]) -> str:
        return self._template.render(**context)

    def parse(self, html: str) -> Any:
        """The weasyprint document of the template's output. The output is well-formed XHTML after
        its doctype (autoescaped values, no DTD), so expat builds the tree; the HTML5 parser reads
        whatever is not, or a weasyprint that keeps its tree elsewhere."""
        if self.xhtml:
            try:
                root = ET.fromstring(html[html.index("<html"):])
            except (ValueError, ET.ParseError):
                root = None
            if root is not None:
                document = self._html(string="<html></html>")
                if hasattr(document, "wrapper_element") and hasattr(document, "etree_element"):
                    document.wrapper_element = self._element_wrapper.from_html_root(root, content_language=None)
                    document.etree_element = document.wrapper_element.etree_element
                    return document
        return self._html(string=html)

    def render(self, context: dict[str, Any]) -> bytes:
        block = context.get("seal_block") or []
        if self.seal_overlay and block and _courier_can_print(block):
            pdf = self._render_with_overlay(context, block)
            if pdf is not None:
                return pdf
        html = self.html(context)  # the seals laid out as text by weasyprint (slower, same content)
        with self._lock:
            return self.parse(html).write_pdf(stylesheets=[self._css], font_config=self._fonts)

    def _render_with_overlay(self, context: dict[str, Any], block: list[str]) -> bytes | None:
        html = self.html({**context, "seal_slot": round(len(block) * SEAL_FONT_PT * SEAL_LINE_HEIGHT, 3)})
        with self._lock:
            document = self.parse(html).render(stylesheets=[self._css], font_config=self._fonts)
            slot = find_seal_slot(document)
            if slot is None:
                return None
            overlay = SealOverlay(slot, block)
            pdf = document.write_pdf(finisher=overlay)
            return pdf if overlay.drawn else None


@dataclass(frozen=True)
class SealSlot:
    page: int
    x_pt: float  # from the page's left edge
    y_pt: float  # from the page's top edge


def find_seal_slot(document: Any) -> SealSlot | None:
    """Where the layout put the empty seal box (#seal-slot): page and top-left corner in points."""
    for number in reversed(range(len(document.pages))):  # the stamp block ends the document
        for box in document.pages[number]._page_box.descendants():
            element = getattr(box, "element", None)
            if element is not None and element.get("id") == "seal-slot" and getattr(box, "element_tag", "div") == "div":
                return SealSlot(number, box.content_box_x() * 0.75, box.content_box_y() * 0.75)
    return None


def _courier_can_print(lines: list[str]) -> bool:
    try:
        "".join(lines).encode("cp1252")
    except UnicodeEncodeError:
        return False
    return True


def _pdf_string(text: str) -> bytes:
    raw = text.encode("cp1252")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


class SealOverlay:
    """A weasyprint finisher: draws the seal lines into the slot's page with the standard Courier
    font (PDF's base 14, WinAnsi encoding: nothing embedded). ``drawn`` stays False when the PDF
    does not have the shape this expects (another weasyprint), and the caller renders the seals
    as text instead."""

    def __init__(self, slot: SealSlot, lines: list[str]) -> None:
        self.slot = slot
        self.lines = lines
        self.drawn = False

    def __call__(self, document: Any, pdf: Any) -> None:
        import pydyf

        try:
            page = pdf.objects[pdf.pages["Kids"][3 * self.slot.page]]
            stream = _resolve(pdf, page["Contents"])
            fonts = _resolve(pdf, _resolve(pdf, page["Resources"])["Font"])
            height = float(page["MediaBox"][3]) - float(page["MediaBox"][1])
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            return
        if not isinstance(stream, pydyf.Stream) or not isinstance(fonts, pydyf.Dictionary):
            return
        courier = pydyf.Dictionary({"Type": "/Font", "Subtype": "/Type1", "BaseFont": "/Courier", "Encoding": "/WinAnsiEncoding"})
        pdf.add_object(courier)
        fonts[SEAL_FONT] = courier.reference
        leading = SEAL_FONT_PT * SEAL_LINE_HEIGHT
        half_leading = (leading - (COURIER_ASCENT + COURIER_DESCENT) * SEAL_FONT_PT) / 2
        first_baseline = height - self.slot.y_pt - half_leading - COURIER_ASCENT * SEAL_FONT_PT
        # weasyprint leaves its page stream y-flipped; undo that, then one text object for the block
        ops = [b"q", f"1 0 0 -1 0 {height:.3f} cm".encode(), b"0.133 0.133 0.133 rg", b"BT", f"/{SEAL_FONT} {SEAL_FONT_PT} Tf".encode(),
               f"{leading:.3f} TL".encode(), f"{self.slot.x_pt:.3f} {first_baseline:.3f} Td".encode()]
        for index, line in enumerate(self.lines):
            ops.append(_pdf_string(line) + (b" Tj" if index == 0 else b" '"))
        ops += [b"ET", b"Q"]
        stream.stream.extend(ops)
        self.drawn = True


def _resolve(pdf: Any, value: Any) -> Any:
    """A pydyf reference (b"12 0 R") to its object; anything else as it is."""
    if isinstance(value, bytes | str):
        text = value.decode() if isinstance(value, bytes) else value
        parts = text.split()
        if len(parts) == 3 and parts[2] == "R" and parts[0].isdigit():
            return pdf.objects[int(parts[0])]
    return value
