"""Vector drawing primitives shared by the figures: mixed-script labels, wrapping and axes.

Figures are ReportLab graphics (vector, no raster images: PDF-15). Every label is at least 9 pt
(PDF-06) and split into runs so Chinese characters use the embedded CJK font (PDF-05).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from reportlab.graphics.shapes import Drawing, Group, PolyLine, String
from reportlab.lib import colors
from reportlab.pdfbase.pdfmetrics import stringWidth

from analysis.report.fonts import FontSet

MIN_FONT_SIZE = 9.0
LABEL_SIZE = 9.0
LINE_HEIGHT = 11.0
# Arms are told apart by grey level and dash pattern, so figures survive black-and-white print.
SERIES_STYLES: tuple[tuple[colors.Color, tuple[float, ...] | None], ...] = (
    (colors.black, None),
    (colors.Color(0.35, 0.35, 0.35), (6.0, 3.0)),
    (colors.Color(0.5, 0.5, 0.5), (2.0, 2.0)),
    (colors.Color(0.2, 0.2, 0.2), (8.0, 2.0, 2.0, 2.0)),
)


def new_drawing(fonts: FontSet, width: float, height: float) -> Drawing:
    """Return an empty drawing whose initial font is an embedded TTF (never Times/Helvetica)."""
    drawing = Drawing(width, height)
    drawing.initialFontName = fonts.regular
    drawing.initialFontSize = LABEL_SIZE
    return drawing


def text_width(fonts: FontSet, text: str, size: float = LABEL_SIZE, *, bold: bool = False) -> float:
    """Return the printed width of ``text`` in points."""
    return float(sum(stringWidth(run, font, size) for font, run in fonts.runs(text, bold=bold)))


def label(
    fonts: FontSet,
    x: float,
    y: float,
    text: str,
    *,
    size: float = LABEL_SIZE,
    anchor: str = "start",
    bold: bool = False,
) -> Group:
    """Return ``text`` at baseline (x, y) anchored start/middle/end, one String per font run."""
    size = max(size, MIN_FONT_SIZE)
    total = text_width(fonts, text, size, bold=bold)
    if anchor == "middle":
        cursor = x - total / 2
    elif anchor == "end":
        cursor = x - total
    else:
        cursor = x
    group = Group()
    for font, run in fonts.runs(text, bold=bold):
        group.add(
            String(cursor, y, run, fontName=font, fontSize=size, fillColor=colors.black)
        )
        cursor += stringWidth(run, font, size)
    return group


def _tokens(text: str) -> list[str]:
    # Latin words wrap at spaces, CJK text may wrap between any two characters.
    tokens: list[str] = []
    word = ""
    for char in text:
        if char == " ":
            if word:
                tokens.append(word)
            tokens.append(" ")
            word = ""
        elif ord(char) >= 0x2E80:
            if word:
                tokens.append(word)
            tokens.append(char)
            word = ""
        else:
            word += char
    if word:
        tokens.append(word)
    return tokens


def wrap(fonts: FontSet, text: str, width: float, size: float = LABEL_SIZE) -> list[str]:
    """Break ``text`` into lines no wider than ``width`` (a too-long word gets its own line)."""
    lines: list[str] = []
    current = ""
    for token in _tokens(text):
        candidate = current + token
        if current and text_width(fonts, candidate.rstrip(), size) > width:
            lines.append(current.rstrip())
            current = token.strip()
        else:
            current = candidate
    if current.strip():
        lines.append(current.rstrip())
    return lines or [""]


def nice_ticks(low: float, high: float, n_target: int = 5) -> list[float]:
    """Return round tick values covering [low, high]."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(n_target, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks: list[float] = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def format_tick(value: float) -> str:
    """Return a short tick label (no trailing zeros)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def styled_line(points: Sequence[float], series_index: int, width: float = 1.2) -> PolyLine:
    """Return a polyline (flat x0, y0, x1, y1, ...) in the style of series ``series_index``."""
    colour, dash = SERIES_STYLES[series_index % len(SERIES_STYLES)]
    line = PolyLine(list(points), strokeColor=colour, strokeWidth=width)
    if dash is not None:
        line.strokeDashArray = list(dash)
    return line
