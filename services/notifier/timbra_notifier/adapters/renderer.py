"""PDF rendering with weasyprint.

What makes it fast (see docs/notifier.md, "Performance", and bench/bench_pdf.py):
- the Jinja2 template is compiled and the stylesheet parsed once per process (one ``CSS`` object
  and one ``FontConfiguration`` shared by every render);
- the layout uses no flexbox, fixed-layout tables and simple class selectors;
- one font family (DejaVu: sans in two weights, mono for the seals);
- the seals arrive pre-split into fixed lines (``white-space: pre``), so no line breaking runs on
  base64; the QR is a small 1-bit PNG drawn without interpolation, not an SVG of hundreds of paths;
- fonts are subset natively by HarfBuzz (Debian's libharfbuzz-subset0, installed by ``make install``);
- the user-agent stylesheet is ``print_ua.css``, the few HTML5 rules the template needs, instead of
  weasyprint's whole HTML5 sheet that every element is matched against.
"""

import threading
from importlib import resources
from typing import Any

import jinja2


def _read(name: str) -> str:
    return resources.files("timbra_notifier").joinpath(f"templates/{name}").read_text(encoding="utf-8")


class WeasyprintRenderer:
    def __init__(self) -> None:
        import weasyprint  # heavy import: only in processes that render
        from weasyprint.text.fonts import FontConfiguration

        self._weasyprint = weasyprint
        self._template = jinja2.Environment(autoescape=True, trim_blocks=False).from_string(_read("invoice.html"))
        self._fonts = FontConfiguration()
        self._css = weasyprint.CSS(string=_read("invoice.css"), font_config=self._fonts)
        ua = [weasyprint.CSS(string=_read("print_ua.css"), font_config=self._fonts)]

        class PrintedHTML(weasyprint.HTML):
            # weasyprint's hook for the UA sheets; if a release renames it, the full HTML5 sheet applies (slower, same look)
            def _ua_stylesheets(self, forms: bool = False) -> list[Any]:
                return ua

        self._html = PrintedHTML
        self._lock = threading.Lock()  # one render at a time per process: weasyprint's caches are not thread-safe

    def html(self, context: dict[str, Any]) -> str:
        return self._template.render(**context)

    def render(self, context: dict[str, Any]) -> bytes:
        html = self.html(context)
        with self._lock:
            document = self._html(string=html)
            return document.write_pdf(stylesheets=[self._css], font_config=self._fonts)
