"""CONSORT 2010 flow diagram: validate the arithmetic (CON-02..CON-06), then draw it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reportlab.graphics.shapes import Drawing, Group, Line, Polygon, Rect
from reportlab.lib import colors

from analysis.report.drawing import LABEL_SIZE, LINE_HEIGHT, label, new_drawing, wrap
from analysis.report.fonts import FontSet
from analysis.report.i18n import Language, text
from analysis.report.spec import ConsortArm, ConsortData, ConsortError

BOX_PAD = 5.0
BAND_HEIGHT = 15.0
GAP = 16.0
BAND_FILL = colors.Color(0.88, 0.88, 0.88)


def validate_consort(data: ConsortData) -> None:
    """Raise ConsortError naming every count that does not add up (CON-02..CON-06)."""
    problems: list[str] = []

    def non_negative(name: str, value: int) -> None:
        if value < 0:
            problems.append(f"{name} is negative ({value})")

    def reasons_sum(name: str, total: int, reasons: Mapping[str, int], required: bool) -> None:
        for reason, count in reasons.items():
            non_negative(f"{name} reason {reason!r}", count)
        if (required or reasons) and sum(reasons.values()) != total:
            problems.append(
                f"{name}: reasons add up to {sum(reasons.values())}, not {total} (CON-03)"
            )

    non_negative("assessed", data.n_assessed)
    non_negative("excluded", data.n_excluded)
    non_negative("randomized", data.n_randomized)
    if data.n_assessed != data.n_excluded + data.n_randomized:
        problems.append(
            f"assessed ({data.n_assessed}) != excluded ({data.n_excluded}) + randomized "
            f"({data.n_randomized}) (CON-02)"
        )
    reasons_sum("excluded", data.n_excluded, data.excluded_reasons, required=True)
    if not data.arms:
        problems.append("no arms")
    allocated = sum(arm.n_allocated for arm in data.arms)
    if data.arms and allocated != data.n_randomized:
        problems.append(
            f"randomized ({data.n_randomized}) != sum of allocated ({allocated}) (CON-04)"
        )
    for arm in data.arms:
        name = f"arm {arm.label!r}"
        for field_name in (
            "n_allocated",
            "n_lost_to_follow_up",
            "n_discontinued",
            "n_analysed",
            "n_excluded_from_analysis",
        ):
            non_negative(f"{name} {field_name}", getattr(arm, field_name))
        if (arm.n_received is None) != (arm.n_not_received is None):
            problems.append(f"{name}: received and not received are both counted or neither")
        elif arm.n_received is not None and arm.n_not_received is not None:
            non_negative(f"{name} n_received", arm.n_received)
            non_negative(f"{name} n_not_received", arm.n_not_received)
            if arm.n_allocated != arm.n_received + arm.n_not_received:
                problems.append(
                    f"{name}: allocated ({arm.n_allocated}) != received ({arm.n_received}) + "
                    f"not received ({arm.n_not_received}) (CON-05)"
                )
        if arm.n_allocated != arm.n_analysed + arm.n_excluded_from_analysis:
            problems.append(
                f"{name}: allocated ({arm.n_allocated}) != analysed ({arm.n_analysed}) + "
                f"excluded from analysis ({arm.n_excluded_from_analysis}) (CON-06)"
            )
        if arm.n_lost_to_follow_up + arm.n_discontinued > arm.n_allocated:
            problems.append(f"{name}: more lost/discontinued than allocated")
        if arm.n_not_received is not None:
            reasons_sum(f"{name} not received", arm.n_not_received, arm.not_received_reasons,
                        False)
        reasons_sum(f"{name} lost", arm.n_lost_to_follow_up, arm.lost_reasons, False)
        reasons_sum(f"{name} discontinued", arm.n_discontinued, arm.discontinued_reasons, False)
        reasons_sum(
            f"{name} excluded from analysis",
            arm.n_excluded_from_analysis,
            arm.excluded_from_analysis_reasons,
            False,
        )
    if problems:
        raise ConsortError("CONSORT counts are inconsistent: " + "; ".join(problems))


@dataclass
class _Box:
    x: float
    width: float
    lines: list[str]

    @property
    def height(self) -> float:
        return len(self.lines) * LINE_HEIGHT + 2 * BOX_PAD


def _box_lines(fonts: FontSet, width: float, items: list[str]) -> list[str]:
    lines: list[str] = []
    for item in items:
        indent = "    " if item.startswith("• ") else ""
        wrapped = wrap(fonts, item, width - 2 * BOX_PAD - 12)
        lines.append(wrapped[0])
        lines += [indent + line for line in wrapped[1:]]
    return lines


def _reason_items(reasons: Mapping[str, int]) -> list[str]:
    return [f"• {reason} (n={count})" for reason, count in reasons.items()]


def _arm_sections(arm: ConsortArm, lang: Language = "en"
                  ) -> tuple[list[str], list[str], list[str]]:
    allocation = [
        text("consort_allocated", lang, arm=arm.label, n=arm.n_allocated),
        *([text("consort_received", lang, n=arm.n_received),
           text("consort_not_received", lang, n=arm.n_not_received)]
          if arm.n_received is not None else [text("consort_use_not_recorded", lang)]),
        *_reason_items(arm.not_received_reasons),
    ]
    follow_up = [
        text("consort_lost", lang, n=arm.n_lost_to_follow_up),
        *_reason_items(arm.lost_reasons),
        text("consort_discontinued", lang, n=arm.n_discontinued),
        *_reason_items(arm.discontinued_reasons),
    ]
    analysis = [
        text("consort_analysed", lang, n=arm.n_analysed),
        text("consort_excluded_analysis", lang, n=arm.n_excluded_from_analysis),
        *_reason_items(arm.excluded_from_analysis_reasons),
    ]
    return allocation, follow_up, analysis


def _arrow(x1: float, y1: float, x2: float, y2: float) -> Group:
    group = Group(Line(x1, y1, x2, y2, strokeColor=colors.black, strokeWidth=0.8))
    if x1 == x2:
        direction = -1.0 if y2 < y1 else 1.0
        head = [x2, y2, x2 - 3, y2 - 6 * direction, x2 + 3, y2 - 6 * direction]
    else:
        direction = 1.0 if x2 > x1 else -1.0
        head = [x2, y2, x2 - 6 * direction, y2 - 3, x2 - 6 * direction, y2 + 3]
    group.add(Polygon(head, fillColor=colors.black, strokeColor=colors.black, strokeWidth=0.5))
    return group


def draw_consort(fonts: FontSet, data: ConsortData, width: float,
                 lang: Language = "en") -> Drawing:
    """Validate ``data`` and draw the CONSORT 2010 flow diagram ``width`` points wide."""
    validate_consort(data)
    main_w = width * 0.46
    main_x = 0.0
    side_x = width * 0.54
    side_w = width - side_x
    assessed = _Box(main_x, main_w, _box_lines(fonts, main_w,
                                               [text("consort_assessed", lang, n=data.n_assessed)]))
    excluded = _Box(
        side_x,
        side_w,
        _box_lines(fonts, side_w, [text("consort_excluded", lang, n=data.n_excluded),
                                   *_reason_items(data.excluded_reasons)]),
    )
    randomized_line = text("consort_randomized", lang, n=data.n_randomized)
    randomized = _Box(main_x, main_w, _box_lines(fonts, main_w, [randomized_line]))
    n_arms = len(data.arms)
    col_gap = 10.0
    col_w = (width - col_gap * (n_arms - 1)) / n_arms
    arm_rows: list[list[_Box]] = [[], [], []]
    for index, arm in enumerate(data.arms):
        x = index * (col_w + col_gap)
        for row, items in zip(arm_rows, _arm_sections(arm, lang)):
            row.append(_Box(x, col_w, _box_lines(fonts, col_w, items)))
    row_heights = [max(box.height for box in row) for row in arm_rows]
    excluded_drop = max(excluded.height, 24.0)
    total = (
        BAND_HEIGHT + GAP / 2 + assessed.height + GAP + excluded_drop + GAP + randomized.height
        + sum(BAND_HEIGHT + GAP / 2 + h + GAP for h in row_heights)
    )
    drawing = new_drawing(fonts, width, total)
    top = total  # a cursor measured in ReportLab coordinates, moving down

    def band(title: str) -> None:
        nonlocal top
        drawing.add(Rect(0, top - BAND_HEIGHT, width, BAND_HEIGHT, fillColor=BAND_FILL,
                         strokeColor=None))
        drawing.add(label(fonts, width / 2, top - BAND_HEIGHT + 4, title, anchor="middle",
                          bold=True))
        top -= BAND_HEIGHT + GAP / 2

    def place(box: _Box, box_top: float, height: float | None = None) -> None:
        h = box.height if height is None else height
        drawing.add(Rect(box.x, box_top - h, box.width, h, fillColor=colors.white,
                         strokeColor=colors.black, strokeWidth=0.8))
        y = box_top - BOX_PAD - LABEL_SIZE
        for line in box.lines:
            drawing.add(label(fonts, box.x + BOX_PAD, y, line))
            y -= LINE_HEIGHT

    band(text("consort_enrollment", lang))
    place(assessed, top)
    centre = main_x + main_w / 2
    line_top = top - assessed.height
    top = line_top - GAP
    place(excluded, top)
    branch_y = top - min(excluded.height, 24.0) / 2
    top -= excluded_drop + GAP
    drawing.add(_arrow(centre, line_top, centre, top))
    drawing.add(_arrow(centre, branch_y, side_x, branch_y))
    place(randomized, top)
    rand_bottom = top - randomized.height
    top = rand_bottom - GAP
    for title, row, height in zip(("allocation", "follow_up", "analysis"), arm_rows,
                                  row_heights, strict=True):
        connector_top = top + GAP
        band(text(f"consort_{title}", lang))
        if title == "allocation":
            bar_y = connector_top - GAP / 2
            drawing.add(Line(centre, connector_top, centre, bar_y, strokeColor=colors.black,
                             strokeWidth=0.8))
            xs = [box.x + box.width / 2 for box in row]
            drawing.add(Line(min([*xs, centre]), bar_y, max([*xs, centre]), bar_y,
                             strokeColor=colors.black, strokeWidth=0.8))
            for x in xs:
                drawing.add(Line(x, bar_y, x, top + GAP / 2 + BAND_HEIGHT,
                                 strokeColor=colors.black, strokeWidth=0.8))
                drawing.add(_arrow(x, top + GAP / 2, x, top))
        else:
            for box in row:
                x = box.x + box.width / 2
                drawing.add(_arrow(x, connector_top, x, top))
        for box in row:
            place(box, top, height)
        top -= height + GAP
    return drawing
