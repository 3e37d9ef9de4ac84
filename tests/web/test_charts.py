"""Charts that inform (issue #22): each line's label sits at its own last point, colours come
from the Okabe-Ito palette with a dash pattern per series, a legend, and a text alternative."""

from __future__ import annotations

import datetime
import re

from dtx_trials.web import charts


def _end_labels(svg: str) -> dict[str, float]:
    return {
        name: float(y)
        for y, name in re.findall(
            r'<text class="chart-end-label" x="[\d.]+" y="([\d.]+)"[^>]*>([^<]+)</text>', svg
        )
    }


def _last_y(svg: str, index: int) -> float:
    lines = re.findall(r'<polyline class="chart-line chart-series-\d+"[^>]*points="([^"]+)"', svg)
    return float(lines[index].split()[-1].split(",")[1])


def test_mean_over_time_labels_sit_beside_their_own_lines() -> None:
    # the statistician's chart: cogtrain ends low (improves), sham ends high; listed in the
    # alphabetical order the page uses, so the old fixed slots put "cogtrain" beside sham
    series = [
        ("cogtrain", [(0.0, 0.0), (12.0, -1.5), (24.0, -3.0)]),
        ("sham", [(0.0, 0.0), (12.0, 0.5), (24.0, 1.0)]),
    ]
    svg = str(charts.line_chart(series, "ADAS-Cog: mean over time", "weeks", "mean", "mean-0"))
    labels = _end_labels(svg)
    for i, (name, _) in enumerate(series):
        assert abs(labels[name] - 4 - _last_y(svg, i)) < 1, (name, labels, svg)
    assert labels["sham"] < labels["cogtrain"]  # sham is drawn higher (smaller y)
    # colour and dash differ per line; legend and text alternative name both series
    assert 'stroke="#0072B2"' in svg and 'stroke="#D55E00"' in svg and "stroke-dasharray" in svg
    assert 'class="chart-legend"' in svg
    desc = re.search(r"<desc [^>]*>([^<]+)</desc>", svg)
    assert desc and "cogtrain: (0, 0), (12, -1.50), (24, -3)" in desc.group(1)
    assert 'aria-labelledby="mean-0-title mean-0-desc"' in svg


def test_end_labels_that_would_overlap_are_moved_apart() -> None:
    series = [("a", [(0.0, 1.0), (1.0, 5.0)]), ("b", [(0.0, 1.0), (1.0, 5.01)])]
    labels = _end_labels(str(charts.line_chart(series, "t", "x", "y", "c")))
    assert abs(labels["a"] - labels["b"]) >= 14


def test_enrollment_chart_runs_to_today_with_target_and_projection() -> None:
    day = datetime.date(2026, 6, 1)
    svg = str(
        charts.enrollment_over_time(
            [day] * 4,
            "Cumulative enrolment",
            today=day + datetime.timedelta(days=3),
            target=10,
            projected_on=day + datetime.timedelta(days=9),
        )
    )
    assert "2026-06-10" in svg  # the axis reaches the projected date
    desc = re.search(r"<desc [^>]*>([^<]+)</desc>", svg)
    assert desc and "Enrolled: 4" in desc.group(1) and "Target: 10" in desc.group(1)
    assert "Projection: 2026-06-10" in desc.group(1)
    assert svg.count("stroke-dasharray") >= 2  # target and projection lines are dashed


def test_every_colour_is_okabe_ito() -> None:
    svg = str(charts.bar_chart([("BJ01", 3.0), ("GZ01", 1.0)], "Enrolled by site", "s"))
    colours = set(re.findall(r'(?:fill|stroke)="(#[0-9A-Fa-f]{6})"', svg))
    assert colours and colours <= set(charts.OKABE_ITO)
    assert "BJ01: 3; GZ01: 1" in svg
