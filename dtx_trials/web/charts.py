"""Server-rendered SVG charts for the trial dashboard (no scripts, no external libraries).

Colours and fonts are SVG presentation attributes or CSS classes from app.css: the page's
Content-Security-Policy forbids inline styles.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Iterable, Sequence

from markupsafe import Markup, escape

WIDTH = 560
BAR_HEIGHT = 22
LABEL_WIDTH = 90


def enrollment_by_site(counts: Sequence[tuple[str, int]], title: str) -> Markup:
    """Return a horizontal bar chart of enrolled participants per site."""
    height = max(1, len(counts)) * (BAR_HEIGHT + 8) + 10
    largest = max((n for _, n in counts), default=0) or 1
    span = WIDTH - LABEL_WIDTH - 40
    parts = [
        f'<svg class="chart" role="img" aria-labelledby="chart-sites-title" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}">',
        f'<title id="chart-sites-title">{escape(title)}</title>',
    ]
    for i, (site, n) in enumerate(counts):
        y = 5 + i * (BAR_HEIGHT + 8)
        width = round(span * n / largest)
        parts.append(
            f'<text class="chart-label" x="0" y="{y + 16}">{escape(site)}</text>'
            f'<rect class="chart-bar" x="{LABEL_WIDTH}" y="{y}" width="{width}" '
            f'height="{BAR_HEIGHT}"></rect>'
            f'<text class="chart-value" x="{LABEL_WIDTH + width + 6}" y="{y + 16}">{n}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  (every text above went through escape())


def enrollment_over_time(dates: Iterable[datetime.date], title: str) -> Markup:
    """Return a step line of cumulative enrollment by day, with the first and last date."""
    per_day = sorted(Counter(dates).items())
    height, left, bottom, top = 180, 40, 150, 10
    parts = [
        f'<svg class="chart" role="img" aria-labelledby="chart-time-title" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}">',
        f'<title id="chart-time-title">{escape(title)}</title>',
        f'<line class="chart-axis" x1="{left}" y1="{bottom}" x2="{WIDTH - 10}" y2="{bottom}">'
        "</line>",
        f'<line class="chart-axis" x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"></line>',
    ]
    if per_day:
        first, last = per_day[0][0], per_day[-1][0]
        days = max(1, (last - first).days)
        total = sum(n for _, n in per_day)
        span_x, span_y = WIDTH - 10 - left, bottom - top
        points: list[str] = [f"{left},{bottom}"]
        running = 0
        for day, n in per_day:
            x = left + round(span_x * (day - first).days / days)
            points.append(f"{x},{bottom - round(span_y * running / total)}")
            running += n
            points.append(f"{x},{bottom - round(span_y * running / total)}")
        parts.append(f'<polyline class="chart-line" points="{" ".join(points)}"></polyline>')
        parts.append(
            f'<text class="chart-label" x="{left}" y="{bottom + 18}">{first.isoformat()}</text>'
            f'<text class="chart-label" x="{WIDTH - 90}" y="{bottom + 18}">{last.isoformat()}'
            "</text>"
            f'<text class="chart-label" x="0" y="{top + 10}">{total}</text>'
            f'<text class="chart-label" x="0" y="{bottom}">0</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  (every text above went through escape())


def line_chart(
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    title: str,
    x_label: str,
    y_label: str,
    chart_id: str,
    *,
    steps: bool = False,
) -> Markup:
    """Return one line per series (e.g. mean change by week, or a Kaplan-Meier step curve)."""
    height, left, bottom, top, right = 220, 50, 180, 10, WIDTH - 120
    points = [p for _, line in series for p in line]
    parts = [
        f'<svg class="chart" role="img" aria-labelledby="{chart_id}-title" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<line class="chart-axis" x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}"></line>',
        f'<line class="chart-axis" x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"></line>',
        f'<text class="chart-label" x="{left}" y="{height - 8}">{escape(x_label)}</text>',
        f'<text class="chart-label" x="2" y="{top + 10}">{escape(y_label)}</text>',
    ]
    if points:
        x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
        y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
        sx = (right - left) / ((x1 - x0) or 1)
        sy = (bottom - top) / ((y1 - y0) or 1)
        parts.append(
            f'<text class="chart-value" x="4" y="{bottom}">{y0:.2f}</text>'
            f'<text class="chart-value" x="4" y="{top + 24}">{y1:.2f}</text>'
        )
        for i, (name, line) in enumerate(series):
            coords: list[str] = []
            for k, (x, y) in enumerate(sorted(line)):
                px, py = left + (x - x0) * sx, bottom - (y - y0) * sy
                if steps and k:
                    coords.append(f"{px:.1f},{float(coords[-1].split(',')[1]):.1f}")
                coords.append(f"{px:.1f},{py:.1f}")
            parts.append(
                f'<polyline class="chart-line chart-series-{i % 4}" fill="none" '
                f'points="{" ".join(coords)}"></polyline>'
                f'<text class="chart-label" x="{right + 8}" y="{top + 16 + 16 * i}">'
                f"{escape(name)}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  (every text above went through escape())


def forest_plot(
    rows: Sequence[tuple[str, float, float, float]], title: str, null: float, chart_id: str
) -> Markup:
    """Return a forest plot: one row per subgroup level (label, estimate, CI low, CI high)."""
    row_height, left, right = 24, 200, WIDTH - 20
    height = len(rows) * row_height + 40
    values = [v for _, e, lo, hi in rows for v in (e, lo, hi)] + [null]
    low, high = min(values), max(values)
    scale = (right - left) / ((high - low) or 1)
    parts = [
        f'<svg class="chart" role="img" aria-labelledby="{chart_id}-title" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<line class="chart-axis" x1="{left + (null - low) * scale:.1f}" y1="5" '
        f'x2="{left + (null - low) * scale:.1f}" y2="{height - 25}"></line>',
    ]
    for i, (label, estimate, ci_low, ci_high) in enumerate(rows):
        y = 20 + i * row_height
        parts.append(
            f'<text class="chart-label" x="0" y="{y + 4}">{escape(label)}</text>'
            f'<line class="chart-line" x1="{left + (ci_low - low) * scale:.1f}" y1="{y}" '
            f'x2="{left + (ci_high - low) * scale:.1f}" y2="{y}"></line>'
            f'<rect class="chart-bar" x="{left + (estimate - low) * scale - 4:.1f}" '
            f'y="{y - 4}" width="8" height="8"></rect>'
        )
    parts.append(
        f'<text class="chart-value" x="{left}" y="{height - 8}">{low:.2f}</text>'
        f'<text class="chart-value" x="{right - 40}" y="{height - 8}">{high:.2f}</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  (every text above went through escape())
