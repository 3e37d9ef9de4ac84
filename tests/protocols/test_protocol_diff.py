"""diff_protocols lists changes by readable path; check_amendment gates breaking ones."""

from __future__ import annotations

from pathlib import Path

from protocols.diff import check_amendment, diff_protocols
from protocols.loader import load_protocol_text

MINIMAL = (Path(__file__).parent / "data" / "minimal.yaml").read_text(encoding="utf-8")

OLD = load_protocol_text(MINIMAL)


def amended(*replacements: tuple[str, str]) -> str:
    text = MINIMAL
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def test_identical_protocols_have_no_changes() -> None:
    assert diff_protocols(OLD, load_protocol_text(MINIMAL)) == []


def test_changes_are_matched_by_id_not_position() -> None:
    new = load_protocol_text(amended(
        ("{en: Score}, min: 0, max: 100", "{en: Total score, zh: 总分}, min: 0, max: 120"),
        ("sample_size: {n: 100}", "sample_size: {n: 120}"),
    ))
    changes = {c.path: c for c in diff_protocols(OLD, new)}
    assert set(changes) == {
        "forms[outcome].fields[score].label.en", "forms[outcome].fields[score].label.zh",
        "forms[outcome].fields[score].max", "sample_size.n",
    }
    assert changes["forms[outcome].fields[score].label.zh"].kind == "added"
    assert changes["sample_size.n"].description == "sample_size.n: 100 → 120"
    assert not any(c.is_breaking for c in changes.values())


def test_breaking_changes_are_flagged_with_stable_ids() -> None:
    new = load_protocol_text(amended(
        ("{id: age, type: integer", "{id: age, type: decimal"),
        ("          - {code: \"2\", label: {en: Female}}\n", ""),
        ("when: \"[sex] = '2'\"", "otherwise: true"),
        ("ratio: 1, is_control", "ratio: 2, is_control"),
        ("block_sizes: [2, 4]", "block_sizes: [3, 6]"),
    ))
    breaking = {c.id: c for c in diff_protocols(OLD, new) if c.is_breaking}
    assert set(breaking) == {"field_type:age", "choice_removed:sex:2", "arms", "randomization"}
    assert breaking["field_type:age"].breaking_reason == \
        "changes the type of field 'age' from integer to decimal"


def test_check_amendment_depends_on_captured_data_and_allocations() -> None:
    new = load_protocol_text(amended(
        ("{id: age, type: integer", "{id: age, type: decimal"),
        ("ratio: 1, is_control", "ratio: 2, is_control"),
        ("block_sizes: [2, 4]", "block_sizes: [3, 6]"),
    ))
    assert check_amendment(OLD, new, fields_with_data=(), has_allocations=False) == []
    found = check_amendment(OLD, new, fields_with_data={"age", "score"}, has_allocations=True)
    assert [c.id for c in found] == ["field_type:age", "arms", "randomization"]
    assert all(c.is_breaking for c in found)
    rest = check_amendment(OLD, new, fields_with_data={"age"}, has_allocations=True,
                           accepted=["field_type:age", "arms"])
    assert [c.id for c in rest] == ["randomization"]


def test_removing_a_field_or_choice_with_data() -> None:
    new = load_protocol_text(amended(
        ("      - {id: score, type: decimal, label: {en: Score}, min: 0, max: 100, decimals: 1}\n",
         "      - {id: score2, type: decimal, label: {en: Score}}\n"),
        ("outcome_fields: [score]", "outcome_fields: [score2]"),
        ("          - {code: \"2\", label: {en: Female}}\n", ""),
        ("when: \"[sex] = '2'\"", "otherwise: true"),
    ))
    found = check_amendment(OLD, new, fields_with_data={"score", "sex"}, has_allocations=False)
    assert sorted(c.id for c in found) == ["choice_removed:sex:2", "field_removed:score"]
    removed = [c for c in diff_protocols(OLD, new) if c.id == "field_removed:score"]
    assert removed[0].path == "forms[outcome].fields[score]"
    assert removed[0].kind == "removed"


def test_arm_wording_is_not_breaking() -> None:
    new = load_protocol_text(amended(("{en: Active, zh: 试验组}", "{en: App, zh: 应用组}")))
    changes = diff_protocols(OLD, new)
    assert [c.path for c in changes] == ["arms[active].name.en", "arms[active].name.zh"]
    assert not any(c.is_breaking for c in changes)
    assert check_amendment(OLD, new, fields_with_data=(), has_allocations=True) == []


def test_reordering_visits_is_reported() -> None:
    extra_visit = "    - id: week_8\n      label: {en: Week 8}\n      day: 56\n      forms: []\n"
    new = load_protocol_text(amended(("forms:\n  - id: screening", "forms:\n  - id: screening"),
                                     ("      forms: [outcome]\n",
                                      "      forms: [outcome]\n" + extra_visit)))
    changes = diff_protocols(OLD, new)
    assert [(c.kind, c.path) for c in changes] == [("added", "schedule.visits[week_8]")]


def test_a_consent_text_changed_under_the_same_version_is_breaking() -> None:
    """A consent counts by (document, version): a new body or question under v1.0 would make
    its earlier signers consented to a text they never read. A new version is not flagged
    (its signers are asked again); wording elsewhere is not a consent change."""
    library = Path(__file__).resolve().parents[2] / "protocols" / "library"
    text = (library / "cognitive_impairment.yaml").read_text(encoding="utf-8")
    old = load_protocol_text(text)
    title = "title: {en: Study partner consent, zh: 研究伙伴知情同意书}"
    assert text.count(title) == 1
    reworded = load_protocol_text(text.replace(
        title, "title: {en: Consent of the study partner, zh: 研究伙伴知情同意书}"))
    found = check_amendment(old, reworded, fields_with_data=(), has_allocations=True)
    assert [c.id for c in found] == ["consent_text:partner_icf:1.0:zh-CN"]
    assert found[0].breaking_reason == (
        "changes the text of consent partner_icf v1.0 (zh-CN) without a new version")
    assert check_amendment(old, reworded, fields_with_data=(), has_allocations=True,
                           accepted=[found[0].id]) == []
    versioned = load_protocol_text(text.replace(
        "{id: partner_icf, version: \"1.0\"", "{id: partner_icf, version: \"1.1\"").replace(
        title, "title: {en: Consent of the study partner, zh: 研究伙伴知情同意书}"))
    assert check_amendment(old, versioned, fields_with_data=(), has_allocations=True) == []
