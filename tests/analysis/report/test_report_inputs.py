"""Input validation of the report engine: blinding (RPT-14), CONSORT arithmetic, layout limits."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from pypdf import PdfReader
from report_samples import REAL_ARMS, consort_data, forest_data, make_spec

from analysis.report import (
    BlindingError,
    ConsortError,
    FigureBlock,
    ForestRow,
    ReportError,
    Section,
    TableBlock,
    TextBlock,
    build_report,
    fonts,
    report_file_name,
    validate_consort,
)


def _small_spec(*blocks: object, blinded: bool = True) -> object:
    return replace(make_spec(blinded=blinded), sections=(Section("1", "Only", tuple(blocks)),))


def _text(pdf: bytes) -> str:
    return re.sub(r"\s+", " ", " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages))


def test_rpt_14_blinded_spec_naming_a_real_arm_is_refused() -> None:
    spec = make_spec(blinded=True, arm_a="CogniTrain app", arm_b="Sham app")
    with pytest.raises(BlindingError, match="CogniTrain app"):
        build_report(spec, forbidden_terms=REAL_ARMS)


def test_rpt_14_forbidden_term_is_found_case_insensitively_in_nested_figure_data() -> None:
    spec = _small_spec(FigureBlock("1", "Flow", "All", 300, consort_data("sham APP", "Arm B")))
    with pytest.raises(BlindingError):
        build_report(spec, forbidden_terms=REAL_ARMS)  # type: ignore[arg-type]


def test_rpt_14_blinded_check_matches_whole_words_only() -> None:
    spec = _small_spec(TextBlock("Inactive participants were contacted by phone."))
    pdf = build_report(spec, forbidden_terms=("Active",))  # type: ignore[arg-type]
    assert "Inactive participants" in _text(pdf)


def test_rpt_14_unblinded_report_may_name_real_arms() -> None:
    spec = _small_spec(TextBlock("CogniTrain app versus Sham app."), blinded=False)
    text = _text(build_report(spec, forbidden_terms=REAL_ARMS))  # type: ignore[arg-type]
    assert "CogniTrain app versus Sham app." in text
    assert "UNBLINDED" in text


def test_con_01_consort_boxes_carry_labels_and_counts() -> None:
    spec = _small_spec(FigureBlock("1", "CONSORT flow diagram", "All screened", 300,
                                   consort_data()))
    text = _text(build_report(spec))  # type: ignore[arg-type]
    for expected in ("Assessed for eligibility (n=300)", "Excluded (n=60)", "Randomized (n=240)",
                     "Allocated to Arm A (n=121)", "Received allocated intervention (n=118)",
                     "Did not receive allocated intervention (n=3)", "Lost to follow-up (n=5)",
                     "Discontinued intervention (n=7)", "Analysed (n=119)",
                     "Excluded from analysis (n=2)", "Declined to participate (n=12)"):
        assert expected in text, expected


def test_con_02_assessed_must_equal_excluded_plus_randomized() -> None:
    with pytest.raises(ConsortError, match="CON-02"):
        validate_consort(replace(consort_data(), n_assessed=301))


def test_con_03_exclusion_reasons_must_add_up() -> None:
    data = consort_data()
    with pytest.raises(ConsortError, match="CON-03"):
        validate_consort(replace(data, excluded_reasons={"Declined to participate": 59}))


def test_con_04_randomized_must_equal_sum_allocated() -> None:
    data = consort_data()
    arm = replace(data.arms[1], n_allocated=118, n_received=118, n_analysed=116)
    with pytest.raises(ConsortError, match="CON-04"):
        validate_consort(replace(data, arms=(data.arms[0], arm)))


def test_con_05_allocated_must_equal_received_plus_not_received() -> None:
    data = consort_data()
    with pytest.raises(ConsortError, match="CON-05"):
        validate_consort(replace(data, arms=(replace(data.arms[0], n_received=117),
                                             data.arms[1])))


def test_con_06_analysed_plus_excluded_must_equal_allocated() -> None:
    data = consort_data()
    with pytest.raises(ConsortError, match="CON-06"):
        validate_consort(replace(data, arms=(replace(data.arms[0], n_analysed=120),
                                             data.arms[1])))


def test_inconsistent_consort_figure_is_not_drawn() -> None:
    spec = _small_spec(FigureBlock("1", "Flow", "All", 300,
                                   replace(consort_data(), n_randomized=239)))
    with pytest.raises(ConsortError, match="CON-02"):
        build_report(spec)  # type: ignore[arg-type]


def test_pdf_10_more_than_four_outline_levels_is_refused() -> None:
    deep = Section("1.1.1.1", "Level four", (TableBlock("1", "T", "FAS", 1, ("a",), (("1",),)),))
    spec = replace(make_spec(), sections=(
        Section("1", "L1", (Section("1.1", "L2", (Section("1.1.1", "L3", (deep,)),)),)),))
    with pytest.raises(ReportError, match="at most 4 levels"):
        build_report(spec)


def test_table_row_with_wrong_cell_count_is_refused() -> None:
    spec = _small_spec(TableBlock("1", "T", "FAS", 2, ("a", "b"), (("1",),)))
    with pytest.raises(ReportError, match="row 1 has 1 cells for 2 columns"):
        build_report(spec)  # type: ignore[arg-type]


def test_forest_estimate_outside_its_ci_is_refused() -> None:
    data = replace(forest_data(), rows=(ForestRow("Sex", "Male", 10, 2.0, -1.0, 1.0),))
    spec = _small_spec(FigureBlock("1", "Forest", "FAS", 10, data))
    with pytest.raises(ReportError, match="outside CI"):
        build_report(spec)  # type: ignore[arg-type]


def test_explicit_missing_cjk_font_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        build_report(_small_spec(TextBlock("x")),  # type: ignore[arg-type]
                     cjk_font_path=tmp_path / "none.ttf")


def test_naive_generated_at_is_refused() -> None:
    spec = replace(make_spec(), generated_at=datetime(2026, 11, 23, 20, 0))
    with pytest.raises(ReportError, match="timezone-aware"):
        build_report(spec)


def test_pdf_16_file_name_is_lowercase_hyphenated_and_short() -> None:
    name = report_file_name(replace(make_spec(), trial_code="COG_DTX 01/" + "X" * 80))
    assert re.match(r"^[a-z0-9][a-z0-9-]*\.pdf$", name)
    assert len(name) <= 64
    assert report_file_name(make_spec()) == "cog-dtx-01-sar-blinded-2026-10-31.pdf"


def test_pdf_05_chinese_without_a_cjk_truetype_font_is_a_clear_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fonts, "_cache", {})
    monkeypatch.setattr(fonts, "cjk_font_candidates", lambda explicit=None: iter(()))
    with pytest.raises(ReportError, match="no CJK TrueType font found"):
        build_report(_small_spec(TextBlock("北京协和医院")))  # type: ignore[arg-type]


def test_font_runs_split_latin_and_chinese() -> None:
    font_set = fonts.load_fonts()
    runs = list(font_set.runs("Site 北京 (n=3)"))
    assert [text for _, text in runs] == ["Site ", "北京", " (n=3)"]
    assert runs[0][0] == runs[2][0] == font_set.regular
    assert runs[1][0] == font_set.cjk


def test_subsection_cannot_switch_orientation() -> None:
    inner = Section("1.1", "Wide", (TextBlock("x"),), landscape=True)
    spec = replace(make_spec(), sections=(Section("1", "Outer", (inner,)),))
    with pytest.raises(ReportError, match="only top-level sections"):
        build_report(spec)


def test_long_listing_is_laid_out_page_by_page() -> None:
    """A 1,500-row listing is measured once and cut at each page end into a page-sized piece
    (no quadratic re-measuring at splits), each piece under the column header, every row
    printed once and in order; a caption is never left alone at a page foot."""
    from analysis.report import ListingBlock
    from analysis.report.document import ReportDocument, StoryBuilder, make_styles
    from analysis.report.fonts import load_fonts

    rows = tuple((f"S-{i:04d}", "Arm A", f"2026-01-{i % 28 + 1:02d}", f"{i * 0.5:.1f}")
                 for i in range(1500))
    block = ListingBlock("16.2.9.1", "Long", "FAS", 1500, ("Subject", "Arm", "Date", "Value"),
                         rows)
    spec = _small_spec(block)
    fonts = load_fonts()
    builder = StoryBuilder(spec, fonts, make_styles(fonts),  # type: ignore[arg-type]
                           ReportDocument(io.BytesIO(), spec, fonts))  # type: ignore[arg-type]
    width, height = builder.document.frame_size(False)
    pieces, rest = [], builder.listing(block, width, height)
    while rest.wrap(width, height)[1] > height:
        first, rest = rest.split(width, height)
        pieces.append(first)
    pieces.append(rest)
    assert len(pieces) >= 1500 // 60
    assert [i for piece in pieces for i in piece.rows] == list(range(1500))
    assert all(piece.wrap(width, height)[1] <= height for piece in pieces)
    pdf = build_report(spec)  # type: ignore[arg-type]
    pages = [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]
    listing_pages = [text for text in pages if "S-0" in text or "S-1" in text]
    # the first page holds fewer rows (the caption above them): one page more at most
    assert len(pieces) <= len(listing_pages) <= len(pieces) + 1
    assert all("Subject" in text and "Value" in text for text in listing_pages)
    assert "Listing 16.2.9.1" in listing_pages[0]
    assert "S-1499" in _text(pdf)
