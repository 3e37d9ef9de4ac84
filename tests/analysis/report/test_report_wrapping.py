"""Table cells never break a word (issue #19): Latin words, numbers, codes and dates stay whole on
one rendered line in both editions and on both paper sizes, while Chinese wraps between
characters; the report lint catches a word broken inside (``wrapped-word``)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pdfminer.high_level import extract_pages
from pdfminer.layout import LTChar
from report_samples import make_spec
from reportlab.lib.styles import ParagraphStyle
from reportlab.platypus import Paragraph, SimpleDocTemplate, Table

from analysis.report import ReportError, ReportSpec, Section, TableBlock, build_report
from analysis.report.document import break_lines, markup, tokens_of
from analysis.report.fonts import load_fonts
from analysis.report.lint import lint_pdf

METHOD = {"en": "t distribution, Satterthwaite df; Kenward-Roger adjusted covariance",
          "zh": "t 分布，Satterthwaite 自由度；Kenward-Roger 校正协方差"}
NOTE = {"en": "Mixed model for repeated measures on the observed visits; missing values handled "
              "by the model under missing at random, no imputation; unstructured covariance, "
              "then Toeplitz if the fit does not converge. " * 2,
        "zh": "基于观测访视的重复测量混合模型；缺失值在随机缺失假设下由模型处理，未做填补；"
              "协方差结构为非结构化，不收敛时改用 Toeplitz 结构。" * 3}


def _spec(language: str, page_size: str) -> ReportSpec:
    """One table whose method column is squeezed to little more than its longest word by a
    long note beside it."""
    rows = (("Difference", METHOD[language], NOTE[language]),
            ("LS mean", "Kenward-Roger", NOTE[language]))
    table = TableBlock("1.1", "Model", "FAS", 80, ("Estimate", "Method", "Note"), rows)
    return replace(make_spec(page_size=page_size), language=language,  # type: ignore[arg-type]
                   sections=(Section("1", "Efficacy", (table,)),))


def _chars(element: object) -> Iterator[LTChar]:
    if isinstance(element, LTChar):
        yield element
    elif hasattr(element, "__iter__"):
        for child in element:
            yield from _chars(child)


def _lines(pdf: bytes) -> list[str]:
    """The rendered text lines, from the characters' positions: characters on one baseline in
    x order, cells apart (a gap wider than a space) joined by " | "."""
    lines: list[str] = []
    for page in extract_pages(io.BytesIO(pdf)):
        rows: dict[float, list[LTChar]] = {}
        for char in _chars(page):
            rows.setdefault(round(char.matrix[5], 1), []).append(char)
        for baseline in sorted(rows, reverse=True):
            text, last = "", None
            for char in sorted(rows[baseline], key=lambda c: c.x0):
                text += (" | " if last is not None and char.x0 - last > 4 else "") + \
                    char.get_text()
                last = char.x1
            lines.append(text)
    return lines


@pytest.fixture(scope="module", params=[("en", "letter"), ("zh", "a4")], ids=["en-letter",
                                                                             "zh-a4"])
def rendered(request: pytest.FixtureRequest) -> tuple[str, ReportSpec, bytes]:
    language, page_size = request.param
    spec = _spec(language, page_size)
    return language, spec, build_report(spec)


def test_a_narrow_column_wraps_between_words_never_inside_one(
        rendered: tuple[str, ReportSpec, bytes]) -> None:
    language, spec, pdf = rendered
    lines = _lines(pdf)
    method = METHOD[language]
    # the method column is narrow: its cell takes several lines ...
    assert not any(method in line for line in lines)
    body = [line for line in lines if "Satterthwa" in line or "Kenward" in line]
    assert len(body) >= 2, lines
    # ... and every word is whole on one line, each copy (one in the cell, two "Kenward-Roger")
    assert sum(line.count("Satterthwaite") for line in lines) == 1
    assert sum(line.count("Kenward-Roger") for line in lines) == 2
    assert sum(line.count("Satterthwa") for line in lines) == 1
    if language == "zh":  # Chinese wraps between characters and stays inside its column
        note_lines = [line for line in lines if "协方差结构" in line or "重复测量" in line]
        assert len(note_lines) >= 4
    width = {"letter": 612, "a4": 595.3}[spec.page_size]
    for page in extract_pages(io.BytesIO(pdf)):
        assert all(c.x1 <= width - 27 for c in _chars(page))  # PDF-09: nothing overflows
    assert lint_pdf(pdf, spec) == []


@given(st.lists(st.sampled_from(["Satterthwaite", "df", "0.049", "BJ01-0005", "Kenward-Roger",
                                 "分", "布", "，", "（", "）", "自由度", " ", "2026-03-01"]),
                max_size=30),
       st.floats(5, 200))
def test_break_lines_never_splits_a_piece(parts: list[str], room: float) -> None:
    text = "".join(parts)
    lines = break_lines(text, room, lambda s: 5.0 * len(s))
    assert [p for line in lines for p in tokens_of(line)] == tokens_of(text)
    assert all(5.0 * len(line) <= room or len(tokens_of(line)) == 1 for line in lines)


def test_a_table_whose_words_cannot_fit_the_page_is_refused() -> None:
    """Twelve columns of a 33-letter word need more than a portrait page; at 9 pt (the
    smallest size, PDF-06) no layout keeps them whole, so the report is not built."""
    word = "Satterthwaite-Kenward-Roger-Welch"
    table = TableBlock("1.1", "Wide", "FAS", 1, tuple(f"c{i}" for i in range(12)),
                       ((word,) * 12,))
    spec = replace(make_spec(), sections=(Section("1", "Efficacy", (table,)),))
    with pytest.raises(ReportError, match=r"table 1\.1 .*longest unbreakable words.*landscape"):
        build_report(spec)


def _one_cell_pdf(text: str, style: ParagraphStyle, width: float) -> bytes:
    fonts = load_fonts()
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, initialFontName=fonts.regular)
    doc.build([Table([["Method"], [Paragraph(markup(fonts, text), style)]],
                     colWidths=[width], style=[("FONTNAME", (0, 0), (-1, -1), fonts.regular)])])
    return buffer.getvalue()


def _cell_spec(text: str) -> ReportSpec:
    table = TableBlock("1.1", "t", "p", 1, ("Method",), ((text,),))
    return replace(make_spec(), sections=(Section("1", "One", (table,)),))


def test_lint_finds_a_word_broken_inside() -> None:
    """ReportLab's own CJK wrapping (the old table layer) breaks "Satterthwa/ite"; so does
    splitting long words. Both fail the lint; a break at a hyphen does not."""
    fonts = load_fonts()
    cjk = ParagraphStyle("cjk", fontName=fonts.regular, fontSize=9, wordWrap="CJK")
    text = "t 分布，Satterthwaite 自由度"
    issues = lint_pdf(_one_cell_pdf(text, cjk, 70), _cell_spec(text))
    assert [i.rule for i in issues] == ["wrapped-word"]
    assert "'Satterthwaite'" in issues[0].message
    split = ParagraphStyle("split", fontName=fonts.regular, fontSize=9, splitLongWords=1)
    issues = lint_pdf(_one_cell_pdf("Kenward-Roger", split, 40), _cell_spec("Kenward-Roger"))
    assert {i.rule for i in issues} == {"wrapped-word"}
    assert any("'Kenward'" in i.message for i in issues)
    hyphen = ParagraphStyle("hyphen", fontName=fonts.regular, fontSize=9)
    at_hyphen = _one_cell_pdf("Kenward-\nRoger", hyphen, 80)
    assert lint_pdf(at_hyphen, _cell_spec("Kenward-Roger")) == []
