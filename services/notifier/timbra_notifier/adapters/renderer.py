"""PDF rendering with weasyprint, from a Jinja2 template (templates compiled once per process)."""

from importlib import resources
from typing import Any

import jinja2


class WeasyprintRenderer:
    def __init__(self) -> None:
        source = resources.files("timbra_notifier").joinpath("templates/invoice.html").read_text(encoding="utf-8")
        self._template = jinja2.Environment(autoescape=True).from_string(source)
        import weasyprint  # heavy import: only in processes that render

        self._weasyprint = weasyprint

    def render(self, context: dict[str, Any]) -> bytes:
        html = self._template.render(**context)
        return self._weasyprint.HTML(string=html).write_pdf()
