"""Protocol texts in any BCP-47 language (issue #22): `zh` and `zh-Hans` are one language, a
protocol declares its other languages under `languages`, a text in an undeclared language is
refused at its line, the validator reports each declared language's coverage, and a reader
gets the nearest text (the language, its primary tag, the other Chinese script, English)."""

from __future__ import annotations

from pathlib import Path

from ecrf.model import Label
from ecrf.render import form_to_json
from protocols.canonical import canonical_json, from_canonical_dict, to_canonical_dict
from protocols.loader import load_protocol_report, load_protocol_text
from protocols.schema import json_schema
from protocols.validation import language_coverage

MINIMAL = (Path(__file__).parent / "data" / "minimal.yaml").read_text(encoding="utf-8")
LIBRARY = Path(__file__).resolve().parents[2] / "protocols" / "library"


def replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def test_zh_hans_is_the_same_as_zh() -> None:
    text = replace(
        MINIMAL,
        "title: {en: Test trial, zh: 测试试验}",
        "title: {en: Test trial, zh-Hans: 测试试验}",
    )
    assert canonical_json(load_protocol_text(text)) == canonical_json(load_protocol_text(MINIMAL))
    both = replace(MINIMAL, "zh: 测试试验}", "zh: 测试试验, zh-Hans: 测试}")
    errors = load_protocol_report(both).errors
    assert [i.path for i in errors] == ["title.zh"] and "duplicate key" in errors[0].message


def test_declared_languages_are_read_shown_and_their_coverage_reported() -> None:
    text = replace(MINIMAL, 'version: "1"\n', 'version: "1"\nlanguages: [zh-Hans, zh-Hant, ja]\n')
    text = replace(
        text,
        "{id: age, type: integer, label: {en: Age}",
        "{id: age, type: integer, label: {en: Age, zh-Hant: 年齡, ja: 年齢}",
    )
    text = replace(
        text,
        "title: {en: Test trial, zh: 测试试验}",
        "title: {en: Test trial, zh: 测试试验, zh-Hant: 測試試驗}",
    )
    report = load_protocol_report(text)
    assert not report.errors, [str(i) for i in report.errors]
    protocol = report.protocol
    assert protocol.languages == ("zh-Hans", "zh-Hant", "ja")
    age = protocol.form("screening").fields[0].label
    assert age.get("ja") == "年齢" and age.get("ja-JP") == "年齢"
    assert age.get("zh-Hant") == "年齡" and age.get("zh-TW") == "年齡"
    assert age.get("zh") == "年齡"  # no Simplified text: the other Chinese script
    assert age.get("ko") == "Age"
    assert protocol.title.get("zh-HK") == "測試試驗" and protocol.title.get("zh-CN") == "测试试验"
    # the form engine renders the reader's language
    rendered = form_to_json(protocol.form("screening"), "ja")
    assert "年齢" in str(rendered)
    # coverage per declared language: warnings name the language, count and per cent
    coverage = language_coverage(protocol)
    total = coverage["en"][1]
    assert coverage["zh-Hant"] == (2, total) and coverage["ja"] == (1, total)
    assert coverage["zh-Hans"][0] == 3  # the title and the two arm names
    warnings = {i.path: i.message for i in report.issues if i.severity == "warning"}
    assert warnings["languages[2]"] == (
        f"ja: 1 of {total} texts translated ({100 // total}%); the others show in English"
    )
    assert "languages[1]" in warnings and warnings["languages[1]"].startswith("zh-Hant: 2 of")
    # the other languages survive the canonical round trip (stored versions)
    again = from_canonical_dict(to_canonical_dict(protocol))
    assert again.form("screening").fields[0].label.others == (("ja", "年齢"), ("zh-Hant", "年齡"))
    assert canonical_json(again) == canonical_json(protocol)


def test_a_text_in_an_undeclared_language_is_refused_at_its_line() -> None:
    text = replace(
        MINIMAL,
        "{id: age, type: integer, label: {en: Age}",
        "{id: age, type: integer, label: {en: Age, ko: 나이}",
    )
    errors = load_protocol_report(text).errors
    assert [i.path for i in errors] == ["forms[0].fields[0].label.ko"]
    assert errors[0].line == line_of(text, "ko: 나이")
    assert "declare the protocol's languages" in errors[0].message
    declared = replace(text, 'version: "1"\n', 'version: "1"\nlanguages: [zh-Hans, ja]\n')
    errors = load_protocol_report(declared).errors
    assert [(i.path, i.message.split(",")[0]) for i in errors] == [
        ("forms[0].fields[0].label.ko", "text in 'ko'")
    ]
    # not a language tag: an unknown key, as before
    bad_tag = replace(MINIMAL, "label: {en: Age}", "label: {en: Age, korean: 나이}")
    assert "unknown key 'korean'" in load_protocol_report(bad_tag).errors[0].message
    # English is always there; a language listed twice is one too many
    listed = replace(MINIMAL, 'version: "1"\n', 'version: "1"\nlanguages: [en, zh, zh-Hans]\n')
    messages = sorted(i.message for i in load_protocol_report(listed).errors)
    assert any("English is always a language" in m for m in messages), messages
    assert any("duplicate language" in m for m in messages), messages


def test_library_protocols_and_the_schema() -> None:
    for path in sorted(LIBRARY.glob("*.yaml")):
        protocol = load_protocol_text(path.read_text(encoding="utf-8"))
        assert protocol.languages is None  # English and Simplified Chinese, as before
        done, total = language_coverage(protocol)["zh-Hans"]
        assert total > 50 and done > 0.5 * total, (path.name, done, total)
    label = json_schema()["$defs"]["Label"]
    assert label["patternProperties"] and "zh-Hans" in label["properties"]
    assert Label("Hi", None, (("zh-Hant", "嗨"),)).get("zh-Hans") == "嗨"  # the other script
