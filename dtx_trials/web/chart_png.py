"""Dashboard charts as PNG images, drawn with matplotlib (Agg) from each chart's CSV table.

One small function per chart kind: horizontal bars (``bar_png``), lines over weeks
(``lines_png``) and cumulative enrolment with target and projection (``enrollment_png``). They
take the rows the CSV download writes, so an image never shows a number the table lacks; the
same rows are written into the PNG's ``Description`` text chunk as its text alternative. Colours
are the Okabe-Ito palette of the SVG charts, lines also differ by dash pattern; every image has
a title, axis labels and a legend in the page's language, with a CJK font for Chinese pages
(the report's font search: ``analysis.report.fonts.cjk_font_candidates``).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import io
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import matplotlib
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.report.fonts import cjk_font_candidates
from dtx_trials.web.charts import OKABE_ITO

DASHES = ("-", "--", ":", "-.")
_LOCK = threading.Lock()
Row = Sequence[Any]


@functools.cache
def _cjk_family() -> str | None:
    """Register the first CJK TrueType font found with matplotlib; return its family name."""
    for path, _index in cjk_font_candidates():
        if path.is_file():
            font_manager.fontManager.addfont(str(path))
            return str(font_manager.FontProperties(fname=str(path)).get_name())
    return None


@contextlib.contextmanager
def _drawing(lang: str) -> Iterator[None]:
    """Draw with DejaVu Sans, then a CJK font (for Chinese pages, and for any Chinese text a
    chart of another page shows). matplotlib's settings are process-wide, so one image is
    drawn at a time (threaded servers)."""
    cjk = _cjk_family()
    if cjk is None and lang.startswith("zh"):
        raise RuntimeError("no CJK font found for a Chinese chart (fonts-wqy-microhei)")
    with _LOCK, matplotlib.rc_context({"font.family": ["DejaVu Sans", *([cjk] if cjk else [])]}):
        yield


def _figure(height: float) -> Figure:
    """A figure on the Agg canvas (no GUI backend, no pyplot state shared between requests)."""
    figure = Figure(figsize=(7.0, height), dpi=100, layout="constrained", facecolor="white")
    FigureCanvasAgg(figure)
    return figure


def describe(rows: Sequence[Row]) -> str:
    """The rows as text (cells joined by ", ", rows by "; "), as the CSV writes them."""
    return "; ".join(", ".join("" if v is None else str(v) for v in row) for row in rows)


def _png(figure: Figure, title: str, rows: Sequence[Row]) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(
        buffer,
        format="png",
        metadata={"Title": title, "Description": describe(rows) or "-", "Software": None},
    )
    return buffer.getvalue()


def bar_png(
    rows: Sequence[Row],
    *,
    title: str,
    label_column: Sequence[int],
    value_column: int,
    value_label: str,
    category_label: str,
    lang: str,
    target_column: int | None = None,
    target_label: str = "",
) -> bytes:
    """Horizontal bars of ``row[value_column]`` labelled by the ``label_column`` cells (joined
    by " / "); with ``target_column``, each row's target (when set) as a black tick."""
    labels = [" / ".join(str(row[i]) for i in label_column if row[i] not in (None, "")) or "—"
              for row in rows]
    values = [float(row[value_column] or 0) for row in rows]
    with _drawing(lang):
        figure = _figure(2.4 + 0.35 * len(rows))
        axes = figure.add_subplot()
        positions = list(range(len(rows)))
        axes.barh(positions, values, color=OKABE_ITO[0], label=value_label)
        for y, value in zip(positions, values, strict=True):
            axes.annotate(f"{value:g}", (value, y), xytext=(4, 0), textcoords="offset points",
                          va="center")
        if target_column is not None:
            marks = [(y, row[target_column]) for y, row in zip(positions, rows, strict=True)
                     if row[target_column] is not None]
            if marks:
                axes.scatter([t for _, t in marks], [y for y, _ in marks], marker="|", s=400,
                             color=OKABE_ITO[7], linewidths=2.5, label=target_label, zorder=3)
        axes.set_yticks(positions, labels)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.invert_yaxis()
        axes.set_xlabel(value_label)
        axes.set_ylabel(category_label)
        axes.set_title(title)
        if rows:
            axes.legend(loc="lower right")
        return _png(figure, title, rows)


def lines_png(
    rows: Sequence[Row],
    *,
    title: str,
    series_column: int,
    x_column: int,
    y_column: int,
    x_label: str,
    y_label: str,
    lang: str,
) -> bytes:
    """One line per value of ``row[series_column]`` (e.g. adherence per stream by week), each
    with its own colour, dash pattern and legend entry; empty cells are left out."""
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row[y_column] is not None:
            series.setdefault(str(row[series_column]), []).append(
                (float(row[x_column]), float(row[y_column]))
            )
    with _drawing(lang):
        figure = _figure(3.6)
        axes = figure.add_subplot()
        for i, (name, points) in enumerate(series.items()):
            axes.plot([x for x, _ in points], [y for _, y in points], marker="o",
                      color=OKABE_ITO[i % len(OKABE_ITO)], linestyle=DASHES[i % len(DASHES)],
                      label=name)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole weeks
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        axes.set_title(title)
        if series:
            axes.legend()
        return _png(figure, title, rows)


def enrollment_png(
    rows: Sequence[Row],
    *,
    title: str,
    target: int | None,
    projected_on: datetime.date | None,
    today: datetime.date,
    names: tuple[str, str, str],
    x_label: str,
    lang: str,
) -> bytes:
    """Cumulative enrolment (rows: ISO date, enrolled that day, cumulative) as a step line up to
    today, the target as a horizontal line and the straight projection to it."""
    days: list[Any] = [datetime.date.fromisoformat(str(row[0])) for row in rows]  # date units
    totals = [int(row[2]) for row in rows]
    with _drawing(lang):
        figure = _figure(3.8)
        axes = figure.add_subplot()
        if days:
            end = max(today, days[-1])
            steps: list[Any] = [days[0], *days, end]
            axes.step(steps, [0, *totals, totals[-1]], where="post",
                      color=OKABE_ITO[0], label=names[0])
            if target is not None and projected_on is not None:
                line: list[Any] = [end, projected_on]
                axes.plot(line, [totals[-1], target], color=OKABE_ITO[1],
                          linestyle=DASHES[1], label=names[2])
        if target is not None:
            axes.axhline(target, color=OKABE_ITO[7], linestyle=DASHES[2], linewidth=1,
                         label=names[1])
        axes.set_xlabel(x_label)
        axes.set_ylabel(names[0])
        axes.set_title(title)
        locator = AutoDateLocator()  # type: ignore[no-untyped-call]
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))  # participants
        if days or target is not None:
            axes.legend(loc="upper left")
        return _png(figure, title, rows)
