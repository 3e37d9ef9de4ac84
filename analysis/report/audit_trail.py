"""The audit trail for inspectors (AUD-07): CSV and PDF of plain rows (who, when, what,
old -> new, why). Pure: the shell selects and blinds the rows; this module only lays them out."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from reportlab.lib import colors
from reportlab.lib.pagesizes import landscape, letter
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import inch
from reportlab.platypus import LongTable, Paragraph, SimpleDocTemplate, Spacer, TableStyle

from analysis.report.document import _finish, markup
from analysis.report.fonts import load_fonts

COLUMNS = (
    "seq",
    "at_utc",
    "actor",
    "role",
    "action",
    "entity",
    "subject",
    "field",
    "old",
    "new",
    "reason",
    "hash",
)


@dataclass(frozen=True)
class TrailRow:
    """One field change (or one event without field changes) of the trail."""

    seq: int
    at_utc: str
    actor: str
    role: str
    action: str
    entity: str
    subject: str
    field: str
    old: str
    new: str
    reason: str
    hash: str


def trail_csv(rows: Sequence[TrailRow]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([getattr(row, c) for c in COLUMNS])
    return out.getvalue().encode("utf-8")


def _clip(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def trail_pdf(rows: Sequence[TrailRow], *, title: str, scope: str, generated_at: datetime) -> bytes:
    """A landscape Letter PDF (1.4, linearized, fonts embedded, 9 pt) with page numbers."""
    fonts = load_fonts()
    small = ParagraphStyle("cell", fontName=fonts.regular, fontSize=9, leading=11)
    head = ParagraphStyle("head", fontName=fonts.bold, fontSize=12, leading=15)
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=landscape(letter),
        leftMargin=0.8 * inch,
        rightMargin=0.5 * inch,
        topMargin=0.8 * inch,
        bottomMargin=0.6 * inch,
        title=title,
        author="dtx-trials",
        pdfVersion=(1, 4),
        initialFontName=fonts.regular,
        invariant=True,
    )
    header = ["Seq", "When (UTC)", "Who", "What", "Field", "Old → new", "Why"]
    data = [[Paragraph(markup(fonts, h, bold=True), small) for h in header]]
    for r in rows:
        data.append(
            [
                Paragraph(str(r.seq), small),
                Paragraph(markup(fonts, r.at_utc), small),
                Paragraph(markup(fonts, f"{r.actor} ({r.role})" if r.role else r.actor), small),
                Paragraph(
                    markup(
                        fonts, f"{r.action} {r.entity}" + (f" {r.subject}" if r.subject else "")
                    ),
                    small,
                ),
                Paragraph(markup(fonts, r.field), small),
                Paragraph(markup(fonts, _clip(f"{r.old} → {r.new}" if r.field else r.new)), small),
                Paragraph(markup(fonts, _clip(r.reason)), small),
            ]
        )
    table = LongTable(
        data,
        colWidths=[
            0.5 * inch,
            1.4 * inch,
            1.5 * inch,
            1.8 * inch,
            1.1 * inch,
            2.2 * inch,
            1.2 * inch,
        ],
        repeatRows=1,
    )
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black),
                ("LINEBELOW", (0, 1), (-1, -1), 0.2, colors.grey),
            ]
        )
    )
    intro = (
        f"{scope}. {len(rows)} change(s), in chain order; sealed values (identifiers, arms) "
        "appear as keyed fingerprints. Generated "
        f"{generated_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC."
    )
    story = [
        Paragraph(markup(fonts, title, bold=True), head),
        Paragraph(markup(fonts, intro), small),
        Spacer(1, 8),
        table,
    ]

    def number(canvas: object, document: object) -> None:
        canvas.setFont(fonts.regular, 9)  # type: ignore[attr-defined]
        page = canvas.getPageNumber()  # type: ignore[attr-defined]
        canvas.drawRightString(  # type: ignore[attr-defined]
            landscape(letter)[0] - 0.5 * inch, 0.35 * inch, f"Page {page}"
        )

    doc.build(story, onFirstPage=number, onLaterPages=number)
    return _finish(buffer.getvalue(), generated_at)
