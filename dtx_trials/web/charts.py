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
