"""The PDF of a signed consent: what the signer read, their answers and their signature, with
embedded fonts (Latin and CJK). The same inputs give the same bytes (its SHA-256 is in the
trail)."""

from __future__ import annotations

import datetime
import io
import textwrap
from collections.abc import Sequence

from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from analysis.report.fonts import load_fonts

MARGIN = 56
LINE = 15


def build_consent_pdf(
    *,
    trial_code: str,
    subject_code: str,
    document_id: str,
    version: str,
    language: str,
    read_in: str,
    title: str,
    body: str,
    answers: Sequence[tuple[str, str]],
    signer_role: str,
    signer_name: str,
    signed_at: datetime.datetime,
    verification: str,
) -> bytes:
    """Return the PDF bytes of one signed consent document: ``language`` the document's (the
    approved version's), ``read_in`` the language its texts are given in, as the signer's page
    showed them."""
    fonts = load_fonts()
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4, invariant=True)
    pdf.setTitle(f"{document_id} v{version} {subject_code}")
    pdf.setAuthor("dtx-trials")
    _, height = A4
    y = height - MARGIN

    def line(text: str, *, bold: bool = False, size: int = 10) -> None:
        nonlocal y
        if y < MARGIN:
            pdf.showPage()
            y = height - MARGIN
        x = float(MARGIN)
        for font, run in fonts.runs(text, bold=bold):
            pdf.setFont(font, size)
            pdf.drawString(x, y, run)
            x += pdf.stringWidth(run, font, size)
        y -= LINE if size <= 10 else LINE + 4

    def paragraph(text: str) -> None:
        wide = any(ord(c) > 0x2E80 for c in text)
        for part in text.splitlines() or [""]:
            for piece in textwrap.wrap(part, 45 if wide else 90) or [""]:
                line(piece)

    line(title, bold=True, size=14)
    line(f"{trial_code} · {document_id} v{version} ({language}) · {subject_code}")
    if read_in != language:
        line(f"Read and signed in: {read_in}")
    y -= LINE
    paragraph(body)
    y -= LINE
    if answers:
        line("Comprehension questions", bold=True)
        for question, answer in answers:
            paragraph(f"{question} — {answer}")
        y -= LINE
    line("Electronic signature", bold=True)
    line(f"Signed by: {signer_name} ({signer_role})")
    line(f"Signed at: {signed_at.astimezone(datetime.UTC):%Y-%m-%d %H:%M:%S} UTC")
    line(f"Identity check: {verification}")
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()
