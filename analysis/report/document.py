"""Lay out a ReportSpec as a submission-ready PDF (FDA PDF specifications v4.1, ICH E3).

What the layout guarantees, with the criterion it serves (shared/reference/regulatory-checks.md):
PDF 1.4 header (PDF-01); no encryption, JavaScript, attachments or non-link annotations
(PDF-02..04); only embedded TrueType fonts, ReportLab's Helvetica never set (PDF-05); no text
below 9 pt (PDF-06); Letter or A4, portrait or landscape pages (PDF-08); margins ≥ 3/4 in left
and ≥ 3/8 in elsewhere, landscape top ≥ 3/4 in (PDF-09); a hyperlinked table of contents that
lists exactly the bookmarks (PDF-10) and opens with the bookmarks panel (PDF-12); "Page X of Y"
matching the PDF page number, rebuilt until the page count is stable (PDF-13); linearized
(PDF-14); vector figures only (PDF-15); Title/Author/Subject set (PDF-18).
"""

from __future__ import annotations

import io
import re
import weakref
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import accumulate
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pikepdf
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, LETTER, landscape
from reportlab.lib.rl_accel import escapePDF
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import inch
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    CondPageBreak,
    Flowable,
    Frame,
    KeepTogether,
    LongTable,
    NextPageTemplate,
    PageBreak,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)
from reportlab.platypus.doctemplate import IndexingFlowable
from reportlab.platypus.tableofcontents import TableOfContents

from analysis.report.consort import draw_consort
from analysis.report.figures import draw_forest, draw_kaplan_meier, draw_mean_change
from analysis.report.fonts import FontSet, load_fonts
from analysis.report.i18n import text as fixed_text
from analysis.report.spec import (
    BlindingError,
    ConsortData,
    FigureBlock,
    ForestData,
    KaplanMeierData,
    ListingBlock,
    MeanChangeData,
    ReportError,
    ReportSpec,
    Section,
    TableBlock,
    TextBlock,
)

MAX_OUTLINE_DEPTH = 4
CELL_PADDING = 12.0  # ReportLab's default 6 pt left + right cell padding
CELL_TOP_PADDING = 2.0  # the tables' top (and bottom) cell padding
#: one CJK character (a line may break before or after it)
CJK_CHAR = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f]")
#: what a line may not break inside, with the spaces before it: one CJK character, or a word
#: (a run of non-space, non-CJK characters: Latin words, numbers, codes and dates)
PIECE = re.compile(r"(\s*)([\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f]|"
                   r"[^\s\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f]+)")
#: CJK punctuation that may not start a line (kept with the character before it) and that may
#: not end one (kept with the character after it)
NO_LINE_START = frozenset("，。、；：？！）」』》〉】〕％・…,.;:?!)]%")
NO_LINE_END = frozenset("（「『《〈【〔([")
#: a cell holding only numbers: 12, -0.981, 31 (58.5%), 4.1 (2.0), (-0.98, 9.15), <0.001,
#: 9/0, 53, 10.0 (3.9) …
NUMERIC_CELL = re.compile(
    r"^[<>≥≤]?[-−]?\d[\d,]*(\.\d+)?%?"
    r"(\s*[(\[/]\s*[<>]?[-−]?\d[\d,]*(\.\d+)?%?(,\s*[-−]?\d[\d,]*(\.\d+)?%?)?\s*[)\]]?)*$"
    r"|^\([-−]?\d[\d.]*,\s*[-−]?\d[\d.]*\)$"
)
CJK_HINT = "pip install paperang-p2-fonts-cjk or apt-get install fonts-wqy-microhei"
# Margins in points: FDA asks ≥ 3/4 in left, ≥ 3/8 in elsewhere, landscape top ≥ 3/4 in.
MARGIN_LEFT = 1.0 * inch
MARGIN_RIGHT = 0.75 * inch
MARGIN_TOP = 1.0 * inch
MARGIN_BOTTOM = 0.9 * inch
LANDSCAPE_MARGIN_TOP = 1.25 * inch
HEADER_OFFSET = 0.6 * inch  # baseline of the running header below the top edge
LANDSCAPE_HEADER_OFFSET = 0.95 * inch
FOOTER_OFFSET = 0.5 * inch  # baseline of the footer above the bottom edge
RUNNING_SIZE = 9.0
TABLE_SIZE = 9.0
LEADING = TABLE_SIZE * 1.25  # of table and listing cells
BODY_SIZE = 10.0


# --- text helpers --------------------------------------------------------------------------


def markup(fonts: FontSet, text: str, *, bold: bool = False) -> str:
    """Return Paragraph markup for plain ``text``: escaped, CJK runs in the CJK font."""
    parts: list[str] = []
    base = fonts.bold if bold else fonts.regular
    for font, run in fonts.runs(text, bold=bold):
        escaped = escape(run).replace("\n", "<br/>")
        parts.append(escaped if font == base else f'<font name="{font}">{escaped}</font>')
    return "".join(parts)


def iter_texts(value: object) -> Iterator[str]:
    """Yield every string inside a spec (dataclasses, mappings, sequences; keys included)."""
    texts: list[str] = []
    _collect_texts(value, texts.append)
    return iter(texts)


def _collect_texts(value: object, add: Callable[[str], None]) -> None:
    if isinstance(value, str):
        add(value)
    elif is_dataclass(value) and not isinstance(value, type):
        for item in fields(value):
            _collect_texts(getattr(value, item.name), add)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _collect_texts(key, add)
            _collect_texts(item, add)
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, str):  # e.g. the cells of a row: no call per string
                add(item)
            else:
                _collect_texts(item, add)


def check_blinding(spec: ReportSpec, forbidden_terms: Sequence[str]) -> None:
    """Raise BlindingError if a blinded spec mentions any forbidden term (case-insensitive)."""
    if not spec.blinded:
        return
    patterns = [
        (term, re.compile(rf"(?<!\w){re.escape(term.strip())}(?!\w)", re.IGNORECASE))
        for term in forbidden_terms
        if term.strip()
    ]
    texts = list(iter_texts(spec))
    # one search of all texts at once per term first (no match there, none in any text);
    # "\n" between texts is no word character, so a text's own matches stay matches
    everything = "\n".join(texts)
    if not any(pattern.search(everything) for _, pattern in patterns):
        return
    for text in texts:
        for term, pattern in patterns:
            if pattern.search(text):
                raise BlindingError(
                    f"blinded report mentions the real arm label {term!r} in {text[:60]!r}"
                )


def pieces_of(text: str) -> list[tuple[bool, str]]:
    """Return (space before, piece) for the pieces of one paragraph a line may not break
    inside: a Latin word (never split, hyphenated or not), a number, code or date, or one CJK
    character with the punctuation that may not be separated from it."""
    out: list[tuple[bool, str]] = []
    for space, piece in PIECE.findall(text):
        glued = bool(out) and not space and (piece[0] in NO_LINE_START
                                              or out[-1][1][-1] in NO_LINE_END)
        if glued:
            out[-1] = (out[-1][0], out[-1][1] + piece)
        else:
            out.append((bool(space) and bool(out), piece))
    return out


def tokens_of(text: str) -> list[str]:
    """Return the pieces of ``text`` a line may not break inside (see ``pieces_of``)."""
    return [piece for line in text.split("\n") for _, piece in pieces_of(line)]


def break_lines(text: str, room: float, measure: Callable[[str], float]) -> list[str]:
    """Return ``text`` broken into lines no wider than ``room`` (as far as the pieces allow).

    Lines break only at spaces, between CJK characters and where CJK meets Latin script,
    never inside a piece (``pieces_of``): a Latin word, number, code or date longer than
    ``room`` stands alone on its line. ``measure`` gives a text's width (additive: ReportLab
    does not kern).
    """
    lines: list[str] = []
    space = measure(" ")
    for paragraph in text.split("\n"):
        line, used = "", 0.0
        for spaced, piece in pieces_of(paragraph):
            size = measure(piece)
            gap = space if spaced and line else 0.0
            if line and used + gap + size > room:
                lines.append(line)
                line, used = piece, size
            else:
                line += " " + piece if gap else piece
                used += gap + size
        lines.append(line)
    return lines


def numeric_columns(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[bool]:
    """Return, per column, whether every non-empty cell below the header is a number cell."""
    out = []
    for i in range(len(columns)):
        cells = {row[i] for row in rows}  # each distinct value checked once
        texts = [c for c in (cell.strip() for cell in cells) if c]
        out.append(bool(texts) and all(NUMERIC_CELL.match(c) for c in texts))
    return out


def layout_columns(minimum: Sequence[float], preferred: Sequence[float],
                   width: float) -> list[float]:
    """Return column widths that fill ``width``.

    Each column gets at least its widest unbreakable token (``minimum``) so no number, code
    or date is ever broken; if every cell fits on one line (``preferred``) the spare width is
    shared in proportion to the content; otherwise the width left after the minima goes to the
    columns whose text must wrap, in proportion to how much they lack (the other columns are
    reflowed to their minimum). When even the minima do not fit, no layout keeps every word
    whole at the smallest allowed font size (9 pt, PDF-06): ReportError.
    """
    total_min = sum(minimum)
    if total_min > width:
        raise ReportError(
            f"the columns need {total_min:.0f} pt for their longest unbreakable words "
            f"({', '.join(f'{m:.0f}' for m in minimum)} pt) but the page has {width:.0f} pt"
        )
    total_pref = sum(preferred)
    if total_pref <= width:
        return [width * p / total_pref for p in preferred]
    spare = width - total_min
    lack = [p - m for p, m in zip(preferred, minimum, strict=True)]
    total_lack = sum(lack)
    return [m + spare * need / total_lack for m, need in zip(minimum, lack, strict=True)]


# --- styles ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Styles:
    """The paragraph styles of the report (all ≥ 9 pt, black, embedded fonts only)."""

    title: ParagraphStyle
    subtitle: ParagraphStyle
    body: ParagraphStyle
    headings: tuple[ParagraphStyle, ...]
    caption: ParagraphStyle
    cell: ParagraphStyle
    cell_header: ParagraphStyle
    cell_right: ParagraphStyle
    cell_header_right: ParagraphStyle
    footnote: ParagraphStyle
    toc_heading: ParagraphStyle
    toc_levels: tuple[ParagraphStyle, ...]


def make_styles(fonts: FontSet) -> Styles:
    """Return the report's paragraph styles built on the registered fonts."""

    def style(name: str, size: float, *, bold: bool = False, **extra: Any) -> ParagraphStyle:
        return ParagraphStyle(
            name,
            fontName=fonts.bold if bold else fonts.regular,
            fontSize=size,
            leading=size * 1.25,
            textColor=colors.black,
            **extra,
        )

    return Styles(
        title=style("Title", 18, bold=True, spaceAfter=10, alignment=1),
        subtitle=style("Subtitle", 13, spaceAfter=14, alignment=1),
        body=style("Body", BODY_SIZE, spaceAfter=6),
        headings=(
            style("H1", 14, bold=True, spaceBefore=6, spaceAfter=8),
            style("H2", 12, bold=True, spaceBefore=8, spaceAfter=6),
            style("H3", 11, bold=True, spaceBefore=6, spaceAfter=4),
            style("H4", 10, bold=True, spaceBefore=4, spaceAfter=4),
        ),
        caption=style("Caption", 10, bold=True, spaceBefore=8, spaceAfter=4),
        # cells never split a word: Latin words, numbers, codes and dates stay whole (column
        # widths are made wide enough for the longest unbreakable piece, see column_widths);
        # text with CJK characters is broken into lines by break_lines before it gets here
        cell=style("Cell", TABLE_SIZE, splitLongWords=0),
        cell_header=style("CellHeader", TABLE_SIZE, bold=True, splitLongWords=0),
        cell_right=style("CellRight", TABLE_SIZE, splitLongWords=0, alignment=2),
        cell_header_right=style("CellHeaderRight", TABLE_SIZE, bold=True, splitLongWords=0,
                                alignment=2),
        footnote=style("Footnote", 9, spaceAfter=1),
        toc_heading=style("TOCHeading", 14, bold=True, spaceAfter=10),
        toc_levels=tuple(
            style(f"TOC{level}", 10 if level == 0 else 9, leftIndent=14 * level,
                  firstLineIndent=0, spaceBefore=3 if level == 0 else 0)
            for level in range(MAX_OUTLINE_DEPTH)
        ),
    )


# --- flowables -------------------------------------------------------------------------------


class OutlinedParagraph(Paragraph):  # type: ignore[misc]
    """A paragraph that is also a bookmark and a table-of-contents entry."""

    def __init__(self, text: str, style: ParagraphStyle, outline_title: str, level: int,
                 key: str, toc_markup: str) -> None:
        super().__init__(text, style)
        self.outline_title = outline_title
        self.outline_level = level
        self.outline_key = key
        self.toc_markup = toc_markup


class PageCount(IndexingFlowable):  # type: ignore[misc]
    """Zero-size flowable that keeps multiBuild going until the page count is stable."""

    def __init__(self, document: ReportDocument) -> None:
        super().__init__()
        self.document = document
        self.used_total: int | None = None

    def beforeBuild(self) -> None:
        self.used_total = self.document.total_pages

    def afterBuild(self) -> None:
        self.document.total_pages = self.document.page

    def isSatisfied(self) -> bool:
        return self.used_total == self.document.total_pages

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:
        return (0.0, 0.0)

    def draw(self) -> None:
        return None


class _DrawnOnceTable(Table):  # type: ignore[misc]
    """A table laid out in every pass of the document's ``multiBuild`` but drawn only in the
    pass whose output is kept (see ``ReportDocument.multiBuild``): drawing the cells is most
    of the cost of a long listing, and nothing drawn in a discarded pass reaches the PDF."""

    def draw(self) -> None:
        if getattr(getattr(self.canv, "_doctemplate", None), "layout_only", False):
            return
        super().draw()


class _DrawnOnceLongTable(_DrawnOnceTable, LongTable):  # type: ignore[misc]
    pass


class _ReportCanvas(Canvas):  # type: ignore[misc]
    """A canvas that keeps each finished page's content as bytes when it is ASCII (all of a
    report's is: text is written as escaped glyph codes): uncompressed (pikepdf compresses
    the streams when it linearizes, see ``_finish``), ReportLab would otherwise encode every
    page through its Python PDFDocEncoding codec when it writes the file."""

    def showPage(self) -> None:
        super().showPage()
        page = self._doc.Pages.pages[-1]
        if isinstance(page.stream, str) and page.stream.isascii():
            page.stream = page.stream.encode("ascii")


class _RoomFor(CondPageBreak):  # type: ignore[misc]
    """A page break unless ``height`` points are left in the frame, that passes the space
    after the flowable before it on (a plain CondPageBreak would add the next one's space
    before in full, where the frame lets the larger of the two stand for both)."""

    _SPACETRANSFER = True


@dataclass(frozen=True)
class ListingLayout:
    """A data listing measured once: column widths and alignment, the lines of every cell and
    the height of every row (row ``i`` spans ``offsets[i]`` to ``offsets[i + 1]`` below the
    column header). Lines are made by ``break_lines``; a row whose cells each fit on one line
    (nearly all of them) keeps its cells as given instead of a copy in ``broken``."""

    fonts: FontSet
    widths: tuple[float, ...]
    numeric: tuple[bool, ...]
    header: tuple[tuple[str, ...], ...]
    header_height: float
    rows: tuple[tuple[str, ...], ...]
    broken: Mapping[int, tuple[tuple[str, ...], ...]]
    offsets: Sequence[float]
    measure: Callable[..., float]  # text width at table size (``bold=`` keyword)


#: the text of a listing page already encoded for a PDF document: (font name, text) → the
#: (subset font resource, escaped string) pieces ReportLab's text objects would write
_ENCODED: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], list[tuple[str, str]]]] = (
    weakref.WeakKeyDictionary())
#: the same for the one-line cells of listings in the Latin font: text → (first font
#: resource, show operators with any font switch inside, last font resource)
_SHOWN: weakref.WeakKeyDictionary[Any, dict[str, tuple[str, str, str]]] = (
    weakref.WeakKeyDictionary())


class Listing(Flowable):  # type: ignore[misc]
    """Rows ``start`` to ``stop`` of a measured listing (``ListingLayout``) under its column
    header: what one page shows of a listing, or what is left of it to lay out.

    ReportLab's Table measures every cell of the rows it is given each time it is wrapped or
    split, in every layout pass; a listing's row heights are known in advance, so here ``wrap``
    is a subtraction and ``split`` a bisection that fills the space left on the page, however
    many rows remain. ``draw`` writes the rules and the cells' text as PDF text operators
    (positions as a Table with 6 pt side and 2 pt top/bottom padding, top-aligned, numeric
    columns right-aligned, would put them), and only in the pass whose output is kept."""

    def __init__(self, layout: ListingLayout, start: int = 0, stop: int | None = None) -> None:
        super().__init__()
        self.layout = layout
        self.start = start
        self.stop = len(layout.rows) if stop is None else stop
        self.width = sum(layout.widths)
        self.height = (layout.header_height + layout.offsets[self.stop]
                       - layout.offsets[self.start])

    @property
    def rows(self) -> range:
        """The indexes of the rows this piece shows."""
        return range(self.start, self.stop)

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:
        return (self.width, self.height)

    def split(self, availWidth: float, availHeight: float) -> list[Flowable]:
        offsets = self.layout.offsets
        room = availHeight - self.layout.header_height
        end = bisect_right(offsets, offsets[self.start] + room + 1e-6, self.start,
                           self.stop + 1) - 1
        if end <= self.start or end >= self.stop:
            return []  # not one row fits (next page), or everything does (no split)
        return [Listing(self.layout, self.start, end), Listing(self.layout, end, self.stop)]

    def draw(self) -> None:
        if getattr(getattr(self.canv, "_doctemplate", None), "layout_only", False):
            return
        self.canv.addLiteral(self.operators())

    def operators(self) -> str:
        """Return the PDF content operators that draw this piece at the flowable's origin."""
        layout = self.layout
        fonts, measure, numeric = layout.fonts, layout.measure, layout.numeric
        doc = self.canv._doc
        shown = _SHOWN.setdefault(doc, {})
        lefts = [sum(layout.widths[:i]) for i in range(len(layout.widths))]
        left_text = [f"{left + CELL_PADDING / 2:.2f}" for left in lefts]
        right_edge = [left + width - CELL_PADDING / 2
                      for left, width in zip(lefts, layout.widths, strict=True)]
        # one text object per cell line, its font set in it and ending with a line feed (T*),
        # as ReportLab's tables write them: text extraction sees each cell as its own line
        out = ["0 g"]
        append = out.append

        def cell(column: int, lines: Sequence[str], top: float, bold: bool) -> None:
            """Any cell: several lines, several scripts, bold (the column header)."""
            y = top - CELL_TOP_PADDING - TABLE_SIZE
            for line in lines:
                if line:
                    x = (f"{right_edge[column] - measure(line, bold=bold):.2f}"
                         if numeric[column] else left_text[column])
                    append(f"BT 1 0 0 1 {x} {y:.2f} Tm")
                    for font, run in fonts.runs(line, bold=bold):
                        for resource, chunk in _encoded(doc, font, run):
                            append(f"{resource} {TABLE_SIZE:g} Tf {LEADING:g} TL ({chunk}) Tj")
                    append("T* ET")
                y -= LEADING

        top = self.height
        for column, header_lines in enumerate(layout.header):
            cell(column, header_lines, top, True)
        top -= layout.header_height
        offsets, rows, broken = layout.offsets, layout.rows, layout.broken
        base = offsets[self.start]
        regular = fonts.regular
        font_size = f"{TABLE_SIZE:g} Tf {LEADING:g} TL"
        for index in self.rows:
            row_top = top - (offsets[index] - base)
            broken_row = broken.get(index)
            if broken_row is not None:
                for column, cell_lines in enumerate(broken_row):
                    cell(column, cell_lines, row_top, False)
                continue
            # the common row: every cell one line; ASCII text is one run in the Latin font
            y = f"{row_top - CELL_TOP_PADDING - TABLE_SIZE:.2f}"
            for column, text in enumerate(rows[index]):
                if not text:
                    continue
                if not text.isascii():
                    cell(column, (text,), row_top, False)
                    continue
                entry = shown.get(text)
                if entry is None:
                    pieces = _encoded(doc, regular, text)
                    entry = shown[text] = (pieces[0][0], " ".join(
                        f"{resource} {TABLE_SIZE:g} Tf ({chunk}) Tj" if i else f"({chunk}) Tj"
                        for i, (resource, chunk) in enumerate(pieces)), pieces[-1][0])
                first, body, _ = entry
                x = (f"{right_edge[column] - measure(text):.2f}" if numeric[column]
                     else left_text[column])
                append(f"BT 1 0 0 1 {x} {y} Tm {first} {font_size} {body} T* ET")
        append("0 G")
        # the rules: above and below the column header, below the last row
        bottom = self.height - layout.header_height - (offsets[self.stop] - base)
        for rule, weight in ((self.height, 0.8), (self.height - layout.header_height, 0.5),
                             (bottom, 0.8)):
            append(f"{weight:g} w 0 {rule:.2f} m {self.width:.2f} {rule:.2f} l S")
        return "\n".join(out)


def _encoded(doc: Any, font_name: str, text: str) -> list[tuple[str, str]]:
    """Return ``text`` in ``font_name`` as (font resource, escaped string) pieces for the PDF
    document ``doc`` (ReportLab assigns the glyphs to the font's subsets as its text objects
    do), each text encoded once per document."""
    cache = _ENCODED.setdefault(doc, {})
    pieces = cache.get((font_name, text))
    if pieces is None:
        font = pdfmetrics.getFont(font_name)
        pieces = cache[(font_name, text)] = [
            (font.getSubsetInternalName(subset, doc), escapePDF(chunk))
            for subset, chunk in font.splitString(text, doc)]
    return pieces


class ReportDocument(BaseDocTemplate):  # type: ignore[misc]
    """Document template with portrait/landscape pages, running header/footer and outline."""

    def __init__(self, buffer: io.BytesIO, spec: ReportSpec, fonts: FontSet) -> None:
        page = LETTER if spec.page_size == "letter" else A4
        super().__init__(
            buffer,
            pagesize=page,
            leftMargin=MARGIN_LEFT,
            rightMargin=MARGIN_RIGHT,
            topMargin=MARGIN_TOP,
            bottomMargin=MARGIN_BOTTOM,
            title=f"{spec.trial_code} {spec.report_title}",
            author=spec.author,
            subject=f"{spec.trial_title} ({'blinded' if spec.blinded else 'unblinded'})",
            creator="dtx-trials analysis.report",
            keywords=[spec.trial_code, spec.product_name],
            initialFontName=fonts.regular,
            initialFontSize=BODY_SIZE,
            invariant=True,
            pageCompression=0,  # pikepdf compresses the page streams (see _ReportCanvas)
        )
        self.spec = spec
        self.fonts = fonts
        self.total_pages: int | None = None
        self.layout_only = False
        self._running_runs: dict[str, tuple[list[tuple[str, str]], float]] = {}
        self._running_cache: dict[tuple[Any, ...], tuple[str, str]] = {}
        portrait_size = page
        landscape_size = landscape(page)
        self.addPageTemplates(
            [
                PageTemplate(
                    id="portrait",
                    pagesize=portrait_size,
                    frames=[self._frame(portrait_size, MARGIN_TOP, "portrait")],
                    onPage=partial(self._decorate, header_offset=HEADER_OFFSET),
                ),
                PageTemplate(
                    id="landscape",
                    pagesize=landscape_size,
                    frames=[self._frame(landscape_size, LANDSCAPE_MARGIN_TOP, "landscape")],
                    onPage=partial(self._decorate, header_offset=LANDSCAPE_HEADER_OFFSET),
                ),
            ]
        )

    @staticmethod
    def _frame(size: tuple[float, float], top: float, frame_id: str) -> Frame:
        width, height = size
        return Frame(
            MARGIN_LEFT,
            MARGIN_BOTTOM,
            width - MARGIN_LEFT - MARGIN_RIGHT,
            height - top - MARGIN_BOTTOM,
            id=frame_id,
            leftPadding=0,
            rightPadding=0,
            topPadding=0,
            bottomPadding=0,
        )

    def frame_size(self, is_landscape: bool) -> tuple[float, float]:
        """Return (width, height) of the text frame on a portrait or landscape page."""
        template = self.pageTemplates[1 if is_landscape else 0]
        frame = template.frames[0]
        return (frame._width, frame._height)

    def _decorate(self, canvas: Canvas, document: BaseDocTemplate, header_offset: float) -> None:
        if self.layout_only:
            return  # nothing drawn in a layout pass reaches the PDF
        width, _ = canvas._pagesize
        before, after = self._running_parts(canvas, header_offset)
        total = "?" if self.total_pages is None else str(self.total_pages)
        page_of = self._running_line(
            canvas._doc, width - MARGIN_RIGHT, FOOTER_OFFSET,
            fixed_text("page_of", self.spec.language, page=document.page, total=total),
            anchor="end")
        canvas.addLiteral(f"{before}\n{page_of}\n{after}")

    def _running_parts(self, canvas: Canvas, header_offset: float) -> tuple[str, str]:
        """Return the operators of the running header and footer but the page number (before
        it, after it), the same on every page of one size: made once."""
        key = (canvas._doc, *canvas._pagesize, header_offset)
        parts = self._running_cache.get(key)
        if parts is not None:
            return parts
        spec = self.spec
        width, height = canvas._pagesize
        lang = spec.language
        blinding = fixed_text("blinded" if spec.blinded else "unblinded", lang)
        top = height - header_offset
        line = partial(self._running_line, canvas._doc)
        ops = ["q 0 g",
               line(MARGIN_LEFT, top, f"{spec.trial_code} · {spec.report_title} · {blinding}")]
        cutoff = (
            fixed_text("cutoff_header", lang, date=spec.data_cutoff_on.isoformat())
            if spec.data_cutoff_on is not None
            else fixed_text("no_cutoff_header", lang)
        )
        ops.append(line(width - MARGIN_RIGHT, top, cutoff, anchor="end"))
        if spec.is_draft:
            # a banner under the header rule on every page (inside the top margin, above the
            # text frame): a draft is never mistaken for a report on locked data
            ops.append(line((MARGIN_LEFT + width - MARGIN_RIGHT) / 2, top - 15,
                            fixed_text("draft_banner", lang), anchor="middle"))
        generated = spec.generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        ops.append(line(MARGIN_LEFT, FOOTER_OFFSET,
                        fixed_text("generated_footer", lang, at=generated,
                                   sha=spec.data_snapshot_sha256[:12])))
        rules = [f"{MARGIN_LEFT:.2f} {y:.2f} m {width - MARGIN_RIGHT:.2f} {y:.2f} l S"
                 for y in (top - 4, FOOTER_OFFSET + 11)]
        parts = self._running_cache[key] = ("\n".join(ops),
                                            "\n".join(["0 G 0.5 w", *rules, "Q"]))
        return parts

    def _running_line(self, doc: Any, x: float, y: float, text: str, *,
                      anchor: str = "start") -> str:
        """Return a text object (BT … ET) drawing one line of the running header or
        footer at RUNNING_SIZE, each script in its font, anchored at ``x``."""
        measured = self._running_runs.get(text)
        if measured is None:
            runs = list(self.fonts.runs(text))
            measured = self._running_runs[text] = (
                runs, sum(stringWidth(run, font, RUNNING_SIZE) for font, run in runs))
        runs, width = measured
        cursor = x - width if anchor == "end" else x - width / 2 if anchor == "middle" else x
        return f"BT 1 0 0 1 {cursor:.2f} {y:.2f} Tm " + " ".join(
            f"{resource} {RUNNING_SIZE:g} Tf ({chunk}) Tj"
            for font, run in runs for resource, chunk in _encoded(doc, font, run)) + " T* ET"

    def multiBuild(self, story: list[Flowable], maxPasses: int = 10,
                   **build_options: Any) -> int:
        """Lay the story out (tables not drawn, output discarded) until the page numbers of
        the contents and the page count settle, then build once more, drawing everything.

        ReportLab's ``multiBuild`` draws every pass and keeps the last; a report needs three
        (contents empty, contents and count filled in, confirmation), so two thirds of the
        drawing was thrown away. This is its loop with that one change: the drawing pass
        starts from the settled entries and the same pending edits applied, so it lays out
        exactly as the last layout pass did (checked: still satisfied afterwards)."""
        self._indexingFlowables = [f for f in story if f.isIndexing()]
        edits: list[tuple[Any, ...]] = []
        self._multiBuildEdits = edits.append
        target: Any = self.filename  # type: ignore[has-type]  # set by BaseDocTemplate
        settled = False
        passes = 0
        try:
            while True:
                passes += 1
                self.layout_only = not settled
                self.filename = target if settled else io.BytesIO()  # layout output dropped
                self._doSave = int(settled)
                for flowable in self._indexingFlowables:
                    flowable.beforeBuild()
                self.build(story[:], **build_options)
                for flowable in self._indexingFlowables:
                    flowable.afterBuild()
                satisfied = bool(self._allSatisfied())
                if settled:
                    if not satisfied:
                        raise ReportError("the drawing pass laid the report out differently")
                    return passes
                if passes > maxPasses:
                    raise ReportError(f"contents not settled after {maxPasses} passes")
                settled = satisfied
                while edits:  # e.g. clear the "postponed" mark of flowables moved on a page
                    edit = edits.pop(0)
                    edit[0](*edit[1:])
        finally:
            self.filename = target
            self.layout_only = False
            self._doSave = 0
            del self._multiBuildEdits

    def afterFlowable(self, flowable: Flowable) -> None:
        if isinstance(flowable, OutlinedParagraph):
            key = flowable.outline_key
            # XYZ with zoom 0 keeps the reader's zoom ("Inherit Zoom", PDF-11).
            top = self.frame._y + flowable.height + flowable.style.spaceBefore + 6
            self.canv.bookmarkPage(key, fit="XYZ", left=0, top=top, zoom=0)
            self.canv.addOutlineEntry(flowable.outline_title, key, flowable.outline_level,
                                      closed=False)
            self.notify("TOCEntry", (flowable.outline_level, flowable.toc_markup, self.page, key))


# --- story -----------------------------------------------------------------------------------


class StoryBuilder:
    """Turn the spec's sections and blocks into ReportLab flowables."""

    def __init__(self, spec: ReportSpec, fonts: FontSet, styles: Styles,
                 document: ReportDocument) -> None:
        self.spec = spec
        self.fonts = fonts
        self.styles = styles
        self.document = document
        self.n_keys = 0
        self.widths: dict[tuple[str, bool], float] = {}  # text_width memo: listings repeat
        self.toc = TableOfContents()  # replaced by table_of_contents()
        #: every heading and caption in story order, as TableOfContents entries (page unknown)
        self.toc_entries: list[tuple[int, str, int, str]] = []

    def outlined(self, title: str, style: ParagraphStyle, level: int) -> OutlinedParagraph:
        if level >= MAX_OUTLINE_DEPTH:
            raise ReportError(
                f"{title!r} would be bookmark level {level + 1}; at most {MAX_OUTLINE_DEPTH} "
                "levels are allowed (PDF-10)"
            )
        self.n_keys += 1
        text = markup(self.fonts, title, bold=True)
        toc_text = markup(self.fonts, title)
        self.toc_entries.append((level, toc_text, 0, f"dest{self.n_keys}"))
        return OutlinedParagraph(text, style, title, level, f"dest{self.n_keys}", toc_text)

    def cell_font(self) -> list[tuple[Any, ...]]:
        """Return table style commands that keep ReportLab's default Helvetica out of cells."""
        return [
            ("FONTNAME", (0, 0), (-1, -1), self.fonts.regular),
            ("FONTSIZE", (0, 0), (-1, -1), TABLE_SIZE),
            ("LEADING", (0, 0), (-1, -1), TABLE_SIZE * 1.25),
        ]

    def title_page(self) -> list[Flowable]:
        spec, fonts, styles = self.spec, self.fonts, self.styles
        lang = spec.language

        def t(key: str, **values: object) -> str:
            return fixed_text(key, lang, **values)

        def day(on: object) -> str:
            return on.isoformat() if hasattr(on, "isoformat") else t("no_data_yet")

        rows = [
            (t("protocol_code"), spec.trial_code),
            (t("protocol_version"), spec.protocol_version),
            (t("product"), t("product_version", name=spec.product_name,
                             version=spec.product_version)),
            (t("indication"), spec.indication),
            (t("design"), spec.design),
            (t("phase"), spec.phase),
            (t("sponsor"), spec.sponsor),
            (t("study_start"), day(spec.study_start_on)),
            (t("study_last_visit"), day(spec.study_completion_on)),
            (t("data_cutoff"), spec.data_cutoff_on.isoformat() if spec.data_cutoff_on
             else t("no_cutoff")),
            (t("report_date"), spec.generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")),
            (t("blinding_status"), t("blinded_title" if spec.blinded else "unblinded_title")),
            *([(t("database_lock"), spec.data_status)] if spec.data_status else []),
            *([(t("signature"), spec.signature_status)] if spec.signature_status else []),
            (t("snapshot"), spec.data_snapshot_sha256),
            (t("software"),
             ", ".join(f"{name} {version}" for name, version in
                       sorted(spec.software_versions.items()))),
        ]
        widths = (130, self.document.frame_size(False)[0] - 130)
        table = Table(
            [[Paragraph(markup(fonts, self.wrapped(k, widths[0], bold=True), bold=True),
                        styles.cell_header),
              Paragraph(markup(fonts, self.wrapped(v, widths[1])), styles.cell)]
             for k, v in rows],
            colWidths=widths,
        )
        table.setStyle(TableStyle([
            *self.cell_font(),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.Color(0.6, 0.6, 0.6)),
        ]))
        return [
            Spacer(1, 24),
            Paragraph(markup(fonts, spec.trial_title, bold=True), styles.title),
            Paragraph(markup(fonts, spec.report_title), styles.subtitle),
            table,
            Spacer(1, 14),
            Paragraph(markup(fonts, t("statement"), bold=True), styles.caption),
            Paragraph(markup(fonts, spec.gcp_statement), styles.body),
            PageBreak(),
        ]

    def table_of_contents(self) -> list[Flowable]:
        toc = self.toc = TableOfContents(
            levelStyles=list(self.styles.toc_levels),
            dotsMinLevel=0,
            tableStyle=TableStyle([
                *self.cell_font(),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                ("TOPPADDING", (0, 0), (-1, -1), 0),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 0),
            ]),
        )
        return [
            Paragraph(markup(self.fonts, fixed_text("toc", self.spec.language), bold=True),
                      self.styles.toc_heading),
            toc,
        ]

    def caption(self, kind: str, number: str, title: str, population: str, n: int,
                level: int) -> OutlinedParagraph:
        lang = self.spec.language
        population_n = fixed_text("caption_n", lang, population=population, n=n)
        text = f"{fixed_text(kind, lang)} {number} {title} ({population_n})"
        return self.outlined(text, self.styles.caption, level)

    def notes(self, footnotes: Sequence[str], source: str) -> list[Flowable]:
        items = [Paragraph(markup(self.fonts, note), self.styles.footnote) for note in footnotes]
        if source:
            items.append(Paragraph(
                markup(self.fonts, fixed_text("source", self.spec.language, source=source)),
                self.styles.footnote))
        return items

    def text_width(self, text: str, *, bold: bool = False) -> float:
        """Return the width of ``text`` at table size in the fonts that draw it."""
        width = self.widths.get((text, bold))
        if width is None:
            if text.isascii():  # one run in the Latin font (it has every ASCII character)
                width = stringWidth(text, self.fonts.bold if bold else self.fonts.regular,
                                    TABLE_SIZE)
            else:
                width = sum(stringWidth(run, font, TABLE_SIZE)
                            for font, run in self.fonts.runs(text, bold=bold))
            width = self.widths[(text, bold)] = float(width)
        return width

    def column_widths(self, columns: Sequence[str], rows: Sequence[Sequence[str]],
                      width: float, number: str = "") -> list[float]:
        """Return column widths from the content (see ``layout_columns``)."""
        minimum: list[float] = []
        preferred: list[float] = []
        text_width = self.text_width
        for i, column in enumerate(columns):
            cells = {row[i] for row in rows}  # listings repeat values: each measured once
            tokens: set[str] = set()
            for text in cells:
                if NUMERIC_CELL.match(text.strip()):
                    # a number cell ("31 (58.5%)", "(-0.98, 9.15)") is one token: never wraps
                    tokens.add(text)
                elif text.isascii():  # no CJK character to break at: tokens_of's pieces
                    tokens.update(text.split())
                else:
                    tokens.update(tokens_of(text))
            minimum.append(max([*(text_width(token, bold=True) for token in tokens_of(column)),
                                *map(text_width, tokens)], default=0.0) + CELL_PADDING)
            preferred.append(max([*(text_width(line, bold=True) for line in column.split("\n")),
                                  *(text_width(line) for text in cells
                                    for line in text.split("\n"))],
                                 default=0.0) + CELL_PADDING)
        try:
            return layout_columns(minimum, preferred, width)
        except ReportError as error:
            raise ReportError(f"table {number} ({', '.join(columns)}): {error}; shorten the "
                              "longest words or put the table in a landscape section") from None

    def cell(self, text: str, width: float, *, right: bool = False) -> Flowable | str:
        """Return a table cell: plain text when it fits in the Latin font, else a Paragraph.

        Plain strings are several times faster to lay out than Paragraphs, which matters for
        long listings; Paragraphs switch to the CJK font where needed and wrap at spaces only
        (ReportLab's own CJK wrapping breaks Latin words anywhere, so text with CJK characters
        is broken into lines here, by ``break_lines``).
        """
        if (
            "\n" not in text
            and all(ord(c) in self.fonts.latin_chars for c in text)
            and stringWidth(text, self.fonts.regular, TABLE_SIZE) <= width - CELL_PADDING
        ):
            return text
        style = self.styles.cell_right if right else self.styles.cell
        return Paragraph(markup(self.fonts, self.wrapped(text, width)), style)

    def wrapped(self, text: str, width: float, *, bold: bool = False) -> str:
        """Return ``text`` with its line breaks made when it has CJK characters (else as is)."""
        if not CJK_CHAR.search(text):
            return text
        # half a point to spare: ReportLab must never find a pre-broken line too long
        return "\n".join(break_lines(text, width - CELL_PADDING - 0.5,
                                      partial(self.text_width, bold=bold)))

    def grid(self, columns: Sequence[str], rows: Sequence[Sequence[str]], width: float,
             *, long: bool, number: str = "", widths: Sequence[float] | None = None,
             numeric: Sequence[bool] | None = None) -> Table:
        for index, row in enumerate(rows):
            if len(row) != len(columns):
                raise ReportError(
                    f"row {index + 1} has {len(row)} cells for {len(columns)} columns"
                )
        if widths is None:
            widths = self.column_widths(columns, rows, width, number)
        if numeric is None:
            numeric = numeric_columns(columns, rows)
        header_styles = [
            self.styles.cell_header_right if numeric[i] else self.styles.cell_header
            for i in range(len(columns))
        ]
        data: list[list[Flowable | str]] = [
            [Paragraph(markup(self.fonts, self.wrapped(c, w, bold=True), bold=True),
                       header_styles[i])
             for i, (c, w) in enumerate(zip(columns, widths, strict=True))]
        ]
        data += [[self.cell(cell, w, right=numeric[i])
                  for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
                 for row in rows]
        table_class = _DrawnOnceLongTable if long else _DrawnOnceTable
        table = table_class(data, colWidths=widths, repeatRows=1)
        # numeric columns are right-aligned: each column prints one number of decimals, so
        # right alignment lines the decimal points up (see README, report conventions)
        align = [("ALIGN", (i, 1), (i, -1), "RIGHT") for i in range(len(columns)) if numeric[i]]
        table.setStyle(TableStyle([
            *self.cell_font(),
            *align,
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LINEABOVE", (0, 0), (-1, 0), 0.8, colors.black),
            ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
            ("LINEBELOW", (0, -1), (-1, -1), 0.8, colors.black),
            ("TOPPADDING", (0, 0), (-1, -1), 2),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
        ]))
        return table

    def listing(self, block: ListingBlock, width: float, height: float) -> Listing:
        """Return a data listing measured once, as one flowable that splits at page ends.

        Column widths come from all rows (``column_widths``, as for tables); each cell is
        broken into lines by ``break_lines`` (a cell that fits its column stays one line) and
        each row's height is the tallest cell's lines plus the cell padding. A row taller than
        a page could never be placed: ReportError.
        """
        columns, rows = block.columns, block.rows
        for index, row in enumerate(rows):
            if len(row) != len(columns):
                raise ReportError(
                    f"row {index + 1} has {len(row)} cells for {len(columns)} columns"
                )
        widths = self.column_widths(columns, rows, width, block.number)
        rooms = [w - CELL_PADDING for w in widths]
        header = tuple(tuple(self.break_cell(c, room, bold=True))
                       for c, room in zip(columns, rooms, strict=True))
        padding = 2 * CELL_TOP_PADDING
        header_height = max(len(lines) for lines in header) * LEADING + padding
        one_line = LEADING + padding
        # the cells that do not fit on one line, found among each column's distinct values
        # (listings repeat values): usually none, and then only their rows are broken
        wraps = [{cell for cell in {row[i] for row in rows}
                  if "\n" in cell or self.text_width(cell) > room + 1e-6}
                 for i, room in enumerate(rooms)]
        heights = [one_line] * len(rows)
        broken: dict[int, tuple[tuple[str, ...], ...]] = {}
        tallest = 0.0
        for i, wrapping in enumerate(wraps):
            if not wrapping:
                continue
            for index, row in enumerate(rows):
                if index in broken or row[i] not in wrapping:
                    continue
                cells = tuple(tuple(self.break_cell(cell, room))
                              for cell, room in zip(row, rooms, strict=True))
                broken[index] = cells
                heights[index] = max(len(lines) for lines in cells) * LEADING + padding
                tallest = max(tallest, heights[index])
        offsets = list(accumulate(heights, initial=0.0))
        if header_height + tallest > height:
            raise ReportError(f"listing {block.number}: a row is {tallest:.0f} pt tall with "
                              f"its header and does not fit a page of {height:.0f} pt")
        layout = ListingLayout(
            fonts=self.fonts, widths=tuple(widths),
            numeric=tuple(numeric_columns(columns, rows)), header=header,
            header_height=header_height, rows=rows, broken=broken, offsets=offsets,
            measure=self.text_width)
        return Listing(layout)

    def break_cell(self, text: str, room: float, *, bold: bool = False) -> list[str]:
        """Return the lines of a cell with ``room`` points for its text: the text itself when
        it fits on one line, else ``break_lines``."""
        if "\n" not in text and self.text_width(text, bold=bold) <= room + 1e-6:
            return [text]
        return break_lines(text, room, partial(self.text_width, bold=bold))

    def figure(self, block: FigureBlock, width: float, height: float) -> Flowable:
        data = block.data
        lang = self.spec.language
        if isinstance(data, KaplanMeierData):
            drawing = draw_kaplan_meier(self.fonts, data, width, lang)
        elif isinstance(data, ForestData):
            drawing = draw_forest(self.fonts, data, width, lang)
        elif isinstance(data, MeanChangeData):
            drawing = draw_mean_change(self.fonts, data, width)
        elif isinstance(data, ConsortData):
            drawing = draw_consort(self.fonts, data, width, lang)
        else:
            raise ReportError(f"figure {block.number}: unknown data {type(data).__name__}")
        if drawing.height > height - 60:
            raise ReportError(
                f"figure {block.number} is {drawing.height:.0f} pt tall and does not fit a page "
                "(split it into several figures)"
            )
        return drawing

    def section(self, section: Section, level: int, is_landscape: bool) -> list[Flowable]:
        width, height = self.document.frame_size(is_landscape)
        style = self.styles.headings[min(level, len(self.styles.headings) - 1)]
        story: list[Flowable] = [
            CondPageBreak(120),
            self.outlined(f"{section.number} {section.title}", style, level),
        ]
        for block in section.blocks:
            if isinstance(block, Section):
                if block.landscape and not is_landscape:
                    raise ReportError(
                        f"section {block.number}: only top-level sections may switch between "
                        "portrait and landscape"
                    )
                story += self.section(block, level + 1, is_landscape)
            elif isinstance(block, TextBlock):
                story.append(Paragraph(markup(self.fonts, block.text), self.styles.body))
            elif isinstance(block, TableBlock):
                caption = self.caption("Table", block.number, block.title, block.population,
                                       block.n, level + 1)
                grid = self.grid(block.columns, block.rows, width, long=False,
                                 number=block.number)
                notes = self.notes(block.footnotes, block.source)
                if grid.wrap(width, height)[1] < height * 0.8:
                    story.append(KeepTogether([caption, grid, *notes]))
                else:
                    story += [caption, grid, *notes]
                story.append(Spacer(1, 8))
            elif isinstance(block, ListingBlock):
                caption = self.caption("Listing", block.number, block.title,
                                       block.population, block.n, level + 1)
                listing = self.listing(block, width, height)
                # no caption left alone at the foot of a page: it starts a new page unless
                # the column header and the first rows (up to three) fit below it
                first = listing.layout.offsets[min(3, len(block.rows))]
                needed = (caption.wrap(width, height)[1] + caption.getSpaceBefore()
                          + caption.getSpaceAfter() + listing.layout.header_height + first)
                story += [_RoomFor(needed), caption, listing]
                story += self.notes(block.footnotes, block.source)
                story.append(Spacer(1, 8))
            else:
                caption = self.caption("Figure", block.number, block.title, block.population,
                                       block.n, level + 1)
                drawing = self.figure(block, width, height)
                story.append(KeepTogether([caption, drawing,
                                           *self.notes(block.footnotes, block.source)]))
                story.append(Spacer(1, 8))
        return story

    def story(self) -> list[Flowable]:
        story: list[Flowable] = [PageCount(self.document), *self.title_page(),
                                 *self.table_of_contents()]
        current_landscape = False
        for section in self.spec.sections:
            if section.landscape != current_landscape:
                story.append(NextPageTemplate("landscape" if section.landscape else "portrait"))
                current_landscape = section.landscape
            story.append(PageBreak())
            story += self.section(section, 0, section.landscape)
        # the contents know their entries before the first pass: it lays them out as they will
        # be (a page number is drawn after its entry and takes no room), so the page numbers
        # found in that pass are final and one pass confirms them (else multiBuild goes on)
        self.toc.addEntries(self.toc_entries)
        return story


# --- entry point -----------------------------------------------------------------------------


def _finish(raw: bytes, generated_at: datetime) -> bytes:
    """Linearize, force PDF ≥ 1.4 and the bookmarks panel, drop any page layout/labels.

    The document dates are the report's ``generated_at`` (ReportLab's invariant mode writes
    2000-01-01), so the same spec always yields the same bytes.
    """
    source = io.BytesIO(raw)
    out = io.BytesIO()
    stamp = "D:" + generated_at.astimezone(UTC).strftime("%Y%m%d%H%M%S") + "Z"
    with pikepdf.open(source) as pdf:
        pdf.docinfo["/CreationDate"] = stamp
        pdf.docinfo["/ModDate"] = stamp
        root = pdf.Root
        if "/Outlines" in root:
            root.PageMode = pikepdf.Name.UseOutlines
        for key in ("/PageLayout", "/PageLabels", "/OpenAction"):
            if key in root:
                del root[key]
        pdf.save(out, linearize=True, min_version="1.4", deterministic_id=True)
    return out.getvalue()


def report_file_name(spec: ReportSpec) -> str:
    """Return an eCTD-safe file name (PDF-16): lowercase a-z, 0-9, hyphens, ≤ 64 characters.

    Example: ``cog-dtx-01-sar-blinded-2026-10-31.pdf``.
    """
    stem = re.sub(r"[^a-z0-9]+", "-", spec.trial_code.lower()).strip("-") or "trial"
    on = spec.data_cutoff_on or spec.generated_at.astimezone(UTC).date()
    language = "" if spec.language == "en" else f"-{spec.language}"
    tail = f"-sar-{'blinded' if spec.blinded else 'unblinded'}-{on.isoformat()}{language}"
    return f"{stem[: 64 - len(tail) - 4].rstrip('-')}{tail}.pdf"


def build_report(
    spec: ReportSpec,
    *,
    forbidden_terms: Sequence[str] = (),
    cjk_font_path: Path | None = None,
) -> bytes:
    """Render ``spec`` as a linearized, submission-ready PDF and return its bytes.

    Raises BlindingError when ``spec.blinded`` and any text contains one of
    ``forbidden_terms`` (the real arm labels); ConsortError for CONSORT counts that do not add
    up; ReportError for anything else that cannot be laid out conformingly (a character no
    embedded font can draw, more than four outline levels, a figure taller than a page).
    """
    check_blinding(spec, forbidden_terms)
    if spec.generated_at.utcoffset() is None:
        raise ReportError("generated_at must be a timezone-aware datetime (UTC)")
    if not spec.sections:
        raise ReportError("a report needs at least one section")
    fonts = load_fonts(cjk_font_path)
    missing = fonts.missing_glyphs("".join(iter_texts(spec)))
    if missing:
        hint = "" if fonts.cjk else f" (no CJK TrueType font found; {CJK_HINT})"
        raise ReportError(f"no embedded font can draw {missing[:20]!r}{hint}")
    styles = make_styles(fonts)
    buffer = io.BytesIO()
    document = ReportDocument(buffer, spec, fonts)
    story = StoryBuilder(spec, fonts, styles, document).story()
    document.multiBuild(story, canvasmaker=partial(_ReportCanvas, pdfVersion=(1, 4)),
                        maxPasses=8)
    return _finish(buffer.getvalue(), spec.generated_at)
