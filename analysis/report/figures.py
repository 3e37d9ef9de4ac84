"""Kaplan-Meier, subgroup forest and mean-change plots as ReportLab vector drawings."""

from __future__ import annotations

from reportlab.graphics.shapes import Drawing, Line, Rect
from reportlab.lib import colors

from analysis.report.drawing import (
    LINE_HEIGHT,
    SERIES_STYLES,
    format_tick,
    label,
    new_drawing,
    nice_ticks,
    styled_line,
    text_width,
)
from analysis.report.fonts import FontSet
from analysis.report.i18n import Language, text
from analysis.report.spec import ForestData, ForestRow, KaplanMeierData, MeanChangeData, ReportError

PLOT_HEIGHT = 200.0
TOP_BAND = 40.0  # room above the plot for the value-axis title and the legend
AXIS_COLOUR = colors.black


def _check_lengths(name: str, *lengths: int) -> None:
    if len(set(lengths)) > 1:
        raise ReportError(f"{name}: parallel sequences differ in length {lengths}")


def _legend(
    fonts: FontSet, drawing: Drawing, x: float, y: float, labels: list[str], markers: bool = False
) -> None:
    cursor = x
    for index, caption_text in enumerate(labels):
        drawing.add(styled_line([cursor, y + 3, cursor + 22, y + 3], index))
        if markers:
            colour, _ = SERIES_STYLES[index % len(SERIES_STYLES)]
            drawing.add(Rect(cursor + 9, y + 0.5, 5, 5, fillColor=colour, strokeColor=colour))
        drawing.add(label(fonts, cursor + 26, y, caption_text))
        cursor += 26 + text_width(fonts, caption_text) + 16


def draw_kaplan_meier(fonts: FontSet, data: KaplanMeierData, width: float,
                      lang: Language = "en") -> Drawing:
    """Draw KM step curves with censor ticks and the numbers at risk under the time axis."""
    if not data.curves:
        raise ReportError("Kaplan-Meier figure needs at least one curve")
    for curve in data.curves:
        _check_lengths(f"KM curve {curve.label!r} times/survival", len(curve.times),
                       len(curve.survival))
        if curve.at_risk and len(curve.at_risk) != len(data.risk_times):
            raise ReportError(
                f"KM curve {curve.label!r}: {len(curve.at_risk)} numbers at risk for "
                f"{len(data.risk_times)} risk times"
            )
        if any(not 0.0 <= s <= 1.0 for s in curve.survival):
            raise ReportError(f"KM curve {curve.label!r}: survival outside [0, 1]")
    left = max(52.0, max(text_width(fonts, c.label) for c in data.curves) + 12)
    right = 16.0
    n_risk_rows = len(data.curves) + 1
    risk_block = n_risk_rows * LINE_HEIGHT + 8
    bottom = 34.0 + risk_block
    height = bottom + PLOT_HEIGHT + TOP_BAND
    drawing = new_drawing(fonts, width, height)
    plot_w = width - left - right
    max_time = max(
        [max(c.times, default=0.0) for c in data.curves] + list(data.risk_times) + [1.0]
    )
    x_ticks = nice_ticks(0.0, max_time)
    x_max = x_ticks[-1]

    def sx(t: float) -> float:
        return left + plot_w * t / x_max

    def sy(s: float) -> float:
        return bottom + PLOT_HEIGHT * s

    drawing.add(Line(left, bottom, left + plot_w, bottom, strokeColor=AXIS_COLOUR))
    drawing.add(Line(left, bottom, left, bottom + PLOT_HEIGHT, strokeColor=AXIS_COLOUR))
    for tick in x_ticks:
        drawing.add(Line(sx(tick), bottom, sx(tick), bottom - 4, strokeColor=AXIS_COLOUR))
        drawing.add(label(fonts, sx(tick), bottom - 14, format_tick(tick), anchor="middle"))
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        drawing.add(Line(left - 4, sy(tick), left, sy(tick), strokeColor=AXIS_COLOUR))
        drawing.add(label(fonts, left - 6, sy(tick) - 3, format_tick(tick), anchor="end"))
    drawing.add(label(fonts, left + plot_w / 2, bottom - 27, data.time_label, anchor="middle"))
    drawing.add(label(fonts, left + 4, bottom + PLOT_HEIGHT + 6, data.survival_label))
    for index, curve in enumerate(data.curves):
        points: list[float] = []
        previous = 1.0
        for time, survival in zip(curve.times, curve.survival):
            if points:
                points += [sx(time), sy(previous)]
            points += [sx(time), sy(survival)]
            previous = survival
        if curve.times and curve.times[-1] < x_max and curve.censor_times:
            last_censor = max(curve.censor_times)
            if last_censor > curve.times[-1]:
                points += [sx(last_censor), sy(previous)]
        if len(points) >= 4:
            drawing.add(styled_line(points, index))
        colour, _ = SERIES_STYLES[index % len(SERIES_STYLES)]
        for censor in curve.censor_times:
            level = 1.0
            for time, survival in zip(curve.times, curve.survival):
                if time <= censor:
                    level = survival
            drawing.add(
                Line(sx(censor), sy(level) - 3, sx(censor), sy(level) + 3, strokeColor=colour)
            )
    _legend(fonts, drawing, left, bottom + PLOT_HEIGHT + 26, [c.label for c in data.curves])
    y = bottom - 34 - LINE_HEIGHT + 4
    drawing.add(label(fonts, 4, y + 2, text("number_at_risk", lang), bold=True))
    for curve in data.curves:
        y -= LINE_HEIGHT
        drawing.add(label(fonts, 4, y, curve.label))
        for time, n_at_risk in zip(data.risk_times, curve.at_risk):
            drawing.add(label(fonts, sx(time), y, str(n_at_risk), anchor="middle"))
    return drawing


def draw_forest(fonts: FontSet, data: ForestData, width: float,
                lang: Language = "en") -> Drawing:
    """Draw subgroup levels with n, estimate and CI, interaction p per subgroup factor."""
    if not data.rows:
        raise ReportError("forest plot needs at least one row")
    for row in data.rows:
        if not row.ci_low <= row.estimate <= row.ci_high:
            raise ReportError(
                f"forest row {row.subgroup}/{row.level}: estimate {row.estimate} outside "
                f"CI [{row.ci_low}, {row.ci_high}]"
            )
    lines: list[tuple[str, ForestRow]] = []
    seen: list[str] = []
    for row in data.rows:
        if row.subgroup not in seen:
            seen.append(row.subgroup)
            lines.append(("header", row))
        lines.append(("level", row))
    row_h = 14.0
    top_pad = 24.0
    axis_h = 58.0
    height = top_pad + row_h * len(lines) + axis_h
    drawing = new_drawing(fonts, width, height)
    col_n = width * 0.32
    plot_l = width * 0.35
    plot_r = width * 0.60
    col_est = width * 0.62
    col_p = width
    low = min([r.ci_low for r in data.rows] + [data.null_value])
    high = max([r.ci_high for r in data.rows] + [data.null_value])
    ticks = nice_ticks(low, high, 4)

    def sx(v: float) -> float:
        return plot_l + (plot_r - plot_l) * (v - ticks[0]) / (ticks[-1] - ticks[0])

    header_y = height - 14
    drawing.add(label(fonts, 0, header_y, text("subgroup", lang), bold=True))
    drawing.add(label(fonts, col_n, header_y, "n", anchor="end", bold=True))
    drawing.add(label(fonts, col_est, header_y, data.estimate_label, bold=True))
    drawing.add(label(fonts, col_p, header_y, text("interaction_p", lang), anchor="end",
                      bold=True))
    y = header_y - row_h - 4
    for kind, item in lines:
        if kind == "header":
            drawing.add(label(fonts, 0, y, item.subgroup, bold=True))
            if item.interaction_p is not None:
                drawing.add(
                    label(fonts, col_p, y, format_p_value(item.interaction_p), anchor="end")
                )
        else:
            drawing.add(label(fonts, 10, y, item.level))
            drawing.add(label(fonts, col_n, y, str(item.n), anchor="end"))
            mid = y + 3
            drawing.add(Line(sx(item.ci_low), mid, sx(item.ci_high), mid, strokeColor=colors.black))
            drawing.add(
                Rect(sx(item.estimate) - 3, mid - 3, 6, 6, fillColor=colors.black,
                     strokeColor=colors.black)
            )
            caption_text = f"{item.estimate:.2f} ({item.ci_low:.2f}, {item.ci_high:.2f})"
            drawing.add(label(fonts, col_est, y, caption_text))
        y -= row_h
    axis_y = y + row_h - 8
    drawing.add(Line(plot_l, axis_y, plot_r, axis_y, strokeColor=AXIS_COLOUR))
    null_line = Line(sx(data.null_value), axis_y, sx(data.null_value), header_y - 6,
                     strokeColor=colors.Color(0.4, 0.4, 0.4))
    null_line.strokeDashArray = [3, 2]
    drawing.add(null_line)
    for tick in ticks:
        drawing.add(Line(sx(tick), axis_y, sx(tick), axis_y - 4, strokeColor=AXIS_COLOUR))
        drawing.add(label(fonts, sx(tick), axis_y - 14, format_tick(tick), anchor="middle"))
    if data.favours_left:
        drawing.add(label(fonts, sx(data.null_value) - 4, axis_y - 27,
                          f"← {data.favours_left}", anchor="end"))
    if data.favours_right:
        drawing.add(label(fonts, sx(data.null_value) + 4, axis_y - 27,
                          f"{data.favours_right} →"))
    kind = "prespecified_subgroups" if data.is_prespecified else "exploratory_subgroups"
    drawing.add(label(fonts, 0, axis_y - 42, text(kind, lang)))
    return drawing


def format_p_value(p: float) -> str:
    """Return p as printed in the report: ``<0.001`` below one in a thousand, else 3 decimals."""
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"


def draw_mean_change(fonts: FontSet, data: MeanChangeData, width: float) -> Drawing:
    """Draw mean change over time per arm with error bars (arms dodged to stay readable)."""
    if not data.series:
        raise ReportError("mean-change figure needs at least one series")
    for series in data.series:
        _check_lengths(f"mean-change series {series.label!r}", len(series.times),
                       len(series.means), len(series.errors))
        if any(e < 0 for e in series.errors):
            raise ReportError(f"mean-change series {series.label!r}: negative error bar")
    left, right, bottom = 52.0, 16.0, 46.0
    height = bottom + PLOT_HEIGHT + TOP_BAND
    drawing = new_drawing(fonts, width, height)
    plot_w = width - left - right
    all_times = sorted({t for s in data.series for t in s.times})
    low = min([m - e for s in data.series for m, e in zip(s.means, s.errors)] + [0.0])
    high = max([m + e for s in data.series for m, e in zip(s.means, s.errors)] + [0.0])
    y_ticks = nice_ticks(low, high)
    t_low = min(all_times, default=0.0)
    t_high = max(all_times, default=1.0)
    span = (t_high - t_low) or 1.0

    def sx(t: float) -> float:
        return left + 12 + (plot_w - 24) * (t - t_low) / span

    def sy(v: float) -> float:
        return bottom + PLOT_HEIGHT * (v - y_ticks[0]) / (y_ticks[-1] - y_ticks[0])

    drawing.add(Line(left, bottom, left + plot_w, bottom, strokeColor=AXIS_COLOUR))
    drawing.add(Line(left, bottom, left, bottom + PLOT_HEIGHT, strokeColor=AXIS_COLOUR))
    zero = Line(left, sy(0.0), left + plot_w, sy(0.0), strokeColor=colors.Color(0.6, 0.6, 0.6))
    zero.strokeDashArray = [2, 2]
    drawing.add(zero)
    for tick in all_times:
        drawing.add(Line(sx(tick), bottom, sx(tick), bottom - 4, strokeColor=AXIS_COLOUR))
        drawing.add(label(fonts, sx(tick), bottom - 14, format_tick(tick), anchor="middle"))
    for tick in y_ticks:
        drawing.add(Line(left - 4, sy(tick), left, sy(tick), strokeColor=AXIS_COLOUR))
        drawing.add(label(fonts, left - 6, sy(tick) - 3, format_tick(tick), anchor="end"))
    drawing.add(label(fonts, left + plot_w / 2, bottom - 28, data.time_label, anchor="middle"))
    drawing.add(label(fonts, left + 4, bottom + PLOT_HEIGHT + 6,
                      f"{data.value_label} ({data.error_label})"))
    n_series = len(data.series)
    for index, series in enumerate(data.series):
        dodge = (index - (n_series - 1) / 2) * 4.0
        colour, _ = SERIES_STYLES[index % len(SERIES_STYLES)]
        points: list[float] = []
        for time, mean, error in zip(series.times, series.means, series.errors):
            x = sx(time) + dodge
            points += [x, sy(mean)]
            drawing.add(Line(x, sy(mean - error), x, sy(mean + error), strokeColor=colour))
            drawing.add(Line(x - 3, sy(mean - error), x + 3, sy(mean - error), strokeColor=colour))
            drawing.add(Line(x - 3, sy(mean + error), x + 3, sy(mean + error), strokeColor=colour))
            drawing.add(Rect(x - 2.5, sy(mean) - 2.5, 5, 5, fillColor=colour, strokeColor=colour))
        if len(points) >= 4:
            drawing.add(styled_line(points, index))
    _legend(fonts, drawing, left, bottom + PLOT_HEIGHT + 26, [s.label for s in data.series],
            markers=True)
    return drawing
