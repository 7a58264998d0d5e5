"""A page of the web app as PDF, rendered here by WeasyPrint (no browser, no outside service).

WeasyPrint lays out the HTML for print media, so what `@media print` hides on paper (the
form, the links) is left out of the PDF too. It fetches nothing: the stylesheets are read
from this package's static folder and every other URL in the page is refused, so a report
never waits on the network or leaks a request.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
STYLESHEETS = ("dashboard.css", "report-print.css")


class PdfUnavailable(RuntimeError):
    """WeasyPrint (or the Pango it needs) is not installed here: the message says what to install."""


def _refuse(url: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    raise ValueError(f"not fetched: {url[:100]}")  # WeasyPrint logs it and goes on without


def render_pdf(html: str) -> bytes:
    """`html` as a PDF; raises PdfUnavailable without WeasyPrint or Pango."""
    try:
        weasyprint = importlib.import_module("weasyprint")
    except (ImportError, OSError) as exc:  # OSError: the Python package is there, Pango is not
        raise PdfUnavailable(
            f"PDF needs WeasyPrint (pip install '.[pdf]') and Debian's libpango-1.0-0 libpangoft2-1.0-0: {exc}"
        ) from None
    stylesheets = [weasyprint.CSS(filename=str(STATIC / name)) for name in STYLESHEETS]
    document = weasyprint.HTML(string=html, url_fetcher=_refuse)
    pdf: bytes = document.write_pdf(stylesheets=stylesheets)
    return pdf
