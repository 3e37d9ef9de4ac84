"""Server-rendered SVG charts (no scripts, no external libraries).

Every chart has a title and a text description (``<desc>``, read by screen readers), a legend
when it shows more than one series, and colours from the Okabe-Ito palette (distinguishable
with the common colour-vision deficiencies); lines also differ by dash pattern and carry their
label at their own last point, so no reader has to match a colour. The pages show each chart's
numbers in a table beside it. Colours are SVG presentation attributes (the page's
Content-Security-Policy forbids inline styles).
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Iterable, Sequence

from markupsafe import Markup, escape

WIDTH = 560
BAR_HEIGHT = 22
LABEL_WIDTH = 90
# Okabe & Ito (2008), "Color Universal Design": blue, vermillion, bluish green, orange,
# reddish purple, sky blue, yellow, black
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
DASHES = ("", "6 3", "2 3", "8 3 2 3")
MUTED = "#595959"


def colour(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


def dash(i: int) -> str:
    pattern = DASHES[i % len(DASHES)]
    return f' stroke-dasharray="{pattern}"' if pattern else ""


def _open(chart_id: str, title: str, description: str, height: int) -> list[str]:
    return [
        f'<svg class="chart" role="img" aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
    ]


def _legend(entries: Sequence[tuple[str, str, str]], y: int) -> list[str]:
    """One row of (name, colour, dash pattern) swatches at height y."""
    parts = ['<g class="chart-legend" aria-hidden="true">']
    x = 10
    for name, stroke, pattern in entries:
        dashed = f' stroke-dasharray="{pattern}"' if pattern else ""
        parts.append(
            f'<line x1="{x}" y1="{y - 4}" x2="{x + 24}" y2="{y - 4}" stroke="{stroke}" '
            f'stroke-width="3"{dashed}></line>'
            f'<text class="chart-label" x="{x + 30}" y="{y}">{escape(name)}</text>'
        )
        x += 40 + 7 * len(name)
    parts.append("</g>")
    return parts


def _fmt(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def bar_chart(
    rows: Sequence[tuple[str, float]],
    title: str,
    chart_id: str,
    *,
    unit: str = "",
    label_width: int = LABEL_WIDTH,
) -> Markup:
    """Return a horizontal bar chart, each bar labelled with its value."""
    height = max(1, len(rows)) * (BAR_HEIGHT + 8) + 10
    largest = max((n for _, n in rows), default=0) or 1
    span = WIDTH - label_width - 60
    description = "; ".join(f"{label}: {_fmt(n)}{unit}" for label, n in rows) or "no data"
    parts = _open(chart_id, title, description, height)
    for i, (label, n) in enumerate(rows):
        y = 5 + i * (BAR_HEIGHT + 8)
        width = round(span * n / largest)
        parts.append(
            f'<text class="chart-label" x="0" y="{y + 16}">{escape(label)}</text>'
            f'<rect class="chart-bar" x="{label_width}" y="{y}" width="{width}" '
            f'height="{BAR_HEIGHT}" fill="{colour(0)}"></rect>'
            f'<text class="chart-value" x="{label_width + width + 6}" y="{y + 16}">'
            f"{_fmt(n)}{escape(unit)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  (every text above went through escape())


def enrollment_by_site(counts: Sequence[tuple[str, int]], title: str) -> Markup:
    """Return a horizontal bar chart of enrolled participants per site."""
    return bar_chart([(site, float(n)) for site, n in counts], title, "chart-sites")


def enrollment_over_time(
    dates: Iterable[datetime.date],
    title: str,
    *,
    today: datetime.date | None = None,
    target: int | None = None,
    projected_on: datetime.date | None = None,
    names: tuple[str, str, str] = ("Enrolled", "Target", "Projection"),
) -> Markup:
    """Return cumulative enrolment by day up to today, with the target as a horizontal line
    and a straight projection from today's count to the target on ``projected_on``."""
    per_day = sorted(Counter(dates).items())
    height, left, bottom, top, right = 220, 40, 160, 10, WIDTH - 20
    total = sum(n for _, n in per_day)
    first = per_day[0][0] if per_day else (today or datetime.date.today())
    last = max(
        [d for d, _ in per_day] + [today or first] + ([projected_on] if projected_on else [])
    )
    days = max(1, (last - first).days)
    y_top = max(total, target or 0, 1)
    span_x, span_y = right - left, bottom - top

    def x_of(day: datetime.date) -> int:
        return left + round(span_x * (day - first).days / days)

    def y_of(n: float) -> int:
        return bottom - round(span_y * n / y_top)

    summary = f"{names[0]}: {total}" + (
        f" from {first.isoformat()} to {per_day[-1][0].isoformat()}" if per_day else ""
    )
    if target is not None:
        summary += f"; {names[1]}: {target}"
    if projected_on is not None:
        summary += f"; {names[2]}: {projected_on.isoformat()}"
    parts = _open("chart-time", title, summary, height)
    parts += [
        f'<line class="chart-axis" x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}"></line>',
        f'<line class="chart-axis" x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"></line>',
        f'<text class="chart-label" x="{left}" y="{bottom + 16}">{first.isoformat()}</text>',
        f'<text class="chart-label" x="{right - 70}" y="{bottom + 16}">{last.isoformat()}</text>',
        f'<text class="chart-label" x="0" y="{top + 10}">{y_top}</text>',
        f'<text class="chart-label" x="0" y="{bottom}">0</text>',
    ]
    legend = [(names[0], colour(0), "")]
    if per_day:
        points = [f"{x_of(first)},{bottom}"]
        running = 0
        for day, n in per_day:
            points.append(f"{x_of(day)},{y_of(running)}")
            running += n
            points.append(f"{x_of(day)},{y_of(running)}")
        end = today if today and today > per_day[-1][0] else per_day[-1][0]
        points.append(f"{x_of(end)},{y_of(running)}")
        parts.append(
            f'<polyline class="chart-line" fill="none" stroke="{colour(0)}" stroke-width="2" '
            f'points="{" ".join(points)}"></polyline>'
        )
        if projected_on is not None and target is not None:
            parts.append(
                f'<line x1="{x_of(end)}" y1="{y_of(running)}" x2="{x_of(projected_on)}" '
                f'y2="{y_of(target)}" stroke="{colour(1)}" stroke-width="2"{dash(1)}></line>'
            )
            legend.append((names[2], colour(1), DASHES[1]))
    if target is not None:
        parts.append(
            f'<line x1="{left}" y1="{y_of(target)}" x2="{right}" y2="{y_of(target)}" '
            f'stroke="{colour(7)}" stroke-width="1"{dash(2)}></line>'
        )
        legend.insert(1, (names[1], colour(7), DASHES[2]))
    parts += _legend(legend, height - 12)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  (every text above went through escape())


def _spread(wanted: list[float], gap: float, low: float, high: float) -> list[float]:
    """Move label positions apart by at least ``gap``, keeping their order and the bounds."""
    order = sorted(range(len(wanted)), key=lambda i: wanted[i])
    placed = [0.0] * len(wanted)
    previous = low - gap
    for i in order:
        placed[i] = max(wanted[i], previous + gap)
        previous = placed[i]
    overflow = previous - high
    if overflow > 0:
        for i in order:
            placed[i] -= overflow
    return placed


def line_chart(
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    title: str,
    x_label: str,
    y_label: str,
    chart_id: str,
    *,
    steps: bool = False,
) -> Markup:
    """Return one line per series (e.g. mean change by week, or a Kaplan-Meier step curve).

    Each line has its own colour and dash pattern, its name written at the height of its own
    last point (moved apart just enough not to overlap), and a legend below."""
    height, left, bottom, top, right = 250, 50, 180, 10, WIDTH - 120
    points = [p for _, line in series for p in line]
    description = "; ".join(
        f"{name}: "
        + ", ".join(f"({_fmt(x)}, {_fmt(y)})" for x, y in sorted(line)[:12])
        + (" …" if len(line) > 12 else "")
        for name, line in series
    )
    parts = _open(chart_id, title, f"{x_label} / {y_label}. {description}", height)
    parts += [
        f'<line class="chart-axis" x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}"></line>',
        f'<line class="chart-axis" x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"></line>',
        f'<text class="chart-label" x="{left}" y="{bottom + 30}">{escape(x_label)}</text>',
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
            f'<text class="chart-value" x="{left}" y="{bottom + 14}">{_fmt(x0)}</text>'
            f'<text class="chart-value" x="{right - 20}" y="{bottom + 14}">{_fmt(x1)}</text>'
        )
        ends: list[float] = []
        for i, (_name, line) in enumerate(series):
            coords: list[str] = []
            last_y = float(bottom)
            for k, (x, y) in enumerate(sorted(line)):
                px, py = left + (x - x0) * sx, bottom - (y - y0) * sy
                if steps and k:
                    coords.append(f"{px:.1f},{float(coords[-1].split(',')[1]):.1f}")
                coords.append(f"{px:.1f},{py:.1f}")
                last_y = py
            ends.append(last_y)
            parts.append(
                f'<polyline class="chart-line chart-series-{i % len(OKABE_ITO)}" fill="none" '
                f'stroke="{colour(i)}" stroke-width="2"{dash(i)} '
                f'points="{" ".join(coords)}"></polyline>'
            )
        for i, ((name, _), y) in enumerate(
            zip(series, _spread(ends, 14, top, bottom), strict=True)
        ):
            parts.append(
                f'<text class="chart-end-label" x="{right + 8}" y="{y + 4:.1f}" '
                f'fill="{colour(i)}" data-series="{escape(name)}">{escape(name)}</text>'
            )
        parts += _legend(
            [(name, colour(i), DASHES[i % len(DASHES)]) for i, (name, _) in enumerate(series)],
            height - 12,
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
    description = "; ".join(
        f"{label}: {estimate:.2f} ({ci_low:.2f} to {ci_high:.2f})"
        for label, estimate, ci_low, ci_high in rows
    )
    parts = _open(chart_id, title, f"No effect at {null:g}. {description}", height)
    parts.append(
        f'<line class="chart-axis" x1="{left + (null - low) * scale:.1f}" y1="5" '
        f'x2="{left + (null - low) * scale:.1f}" y2="{height - 25}"></line>'
    )
    for i, (label, estimate, ci_low, ci_high) in enumerate(rows):
        y = 20 + i * row_height
        parts.append(
            f'<text class="chart-label" x="0" y="{y + 4}">{escape(label)}</text>'
            f'<line class="chart-line" x1="{left + (ci_low - low) * scale:.1f}" y1="{y}" '
            f'x2="{left + (ci_high - low) * scale:.1f}" y2="{y}" stroke="{colour(0)}"></line>'
            f'<rect class="chart-bar" x="{left + (estimate - low) * scale - 4:.1f}" '
            f'y="{y - 4}" width="8" height="8" fill="{colour(0)}"></rect>'
        )
    parts.append(
        f'<text class="chart-value" x="{left}" y="{height - 8}">{low:.2f}</text>'
        f'<text class="chart-value" x="{right - 40}" y="{height - 8}">{high:.2f}</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  (every text above went through escape())
