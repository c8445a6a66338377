"""The payment sheet as a PDF: a Jinja2 template rendered by weasyprint (call it in a worker thread)."""

from importlib import resources
from typing import Any

import jinja2


class SheetRenderer:
    def __init__(self) -> None:
        source = resources.files("timbra_billing").joinpath("templates/constancia.html").read_text(encoding="utf-8")
        self._template = jinja2.Environment(autoescape=True).from_string(source)
        self._weasyprint: Any = None

    def render(self, context: dict[str, Any]) -> bytes:
        if self._weasyprint is None:
            import weasyprint  # heavy import: only when the first sheet is printed

            self._weasyprint = weasyprint
        return self._weasyprint.HTML(string=self._template.render(**context)).write_pdf()
