"""The builder's document edits (protocols.editing): YAML → data → YAML keeps every key, and each
edit changes only the item it names; the loader judges the result."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols import editing
from protocols.canonical import canonical_json
from protocols.loader import load_protocol_report, load_protocol_text

LIBRARY = Path(__file__).resolve().parents[2] / "protocols" / "library"
MINIMAL = (Path(__file__).parent / "data" / "minimal.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["cognitive_impairment", "pediatric_myopia", "type2_diabetes"])
def test_round_trip_through_the_builder_loses_nothing(name: str) -> None:
    text = (LIBRARY / f"{name}.yaml").read_text(encoding="utf-8")
    again = editing.dump(editing.parse(text))
    assert canonical_json(load_protocol_text(again)) == canonical_json(load_protocol_text(text))
    # and a second round trip is the identity on the text
    assert editing.dump(editing.parse(again)) == again


def test_edits_change_only_their_item_and_the_loader_checks_them() -> None:
    data = editing.parse(MINIMAL)
    editing.put_field(
        data,
        "outcome",
        {
            "id": "score_sq",
            "type": "calculated",
            "label": {"en": "Score squared"},
            "calculation": "[score] * [score]",
        },
    )
    editing.put_field(
        data, "screening", {"id": "age", "type": "integer", "label": {"en": "Age (y)"}, "max": None}
    )
    editing.put_visit(
        data, {"id": "week_8", "label": {"en": "Week 8"}, "day": 56, "forms": ["outcome"]}
    )
    editing.put_arm(data, {"code": "active", "ratio": 2, "name": {"en": "Active"}})
    # a 2:1 ratio no longer fits blocks of 2 and 4: the loader's message, at its path
    blocks = load_protocol_report(editing.dump(data)).errors
    assert [i.path for i in blocks] == [
        "randomization.block_sizes[0]",
        "randomization.block_sizes[1]",
    ]
    data["randomization"]["block_sizes"] = [3, 6]
    protocol = load_protocol_text(editing.dump(data))
    assert protocol.form("outcome").fields[1].calculation == "[score] * [score]"
    age = protocol.form("screening").fields[0]
    assert age.label.en == "Age (y)" and age.max is None and age.min == 0
    assert [v.id for v in protocol.schedule.visits] == ["screening", "week_4", "week_8"]
    assert protocol.arm("active").ratio == 2 and protocol.endpoints[0].id == "score_w4"
    # a reference to a field that does not exist is the loader's error, with its path
    editing.put_field(
        data,
        "outcome",
        {"id": "bad", "type": "calculated", "label": {"en": "B"}, "calculation": "[nowhere] + 1"},
    )
    report = load_protocol_report(editing.dump(data))
    assert any("nowhere" in i.message for i in report.errors), [str(i) for i in report.errors]
    assert editing.remove_field(data, "outcome", "bad")
    assert not load_protocol_report(editing.dump(data)).errors


def test_skeleton_is_reported_incomplete_not_invented() -> None:
    data = editing.skeleton("NEW-01", {"en": "New trial"})
    report = load_protocol_report(editing.dump(data))
    assert report.errors  # no forms or visits yet: the validator says so
    with pytest.raises(editing.EditError):
        editing.parse("- a list\n- not a mapping\n")
    with pytest.raises(editing.EditError):
        editing.parse("code: [unclosed\n")
