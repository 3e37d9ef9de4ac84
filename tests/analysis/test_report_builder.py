"""SAP results → submission PDF: honest metadata, ICH E3 content, labels, formats, editions.

The three library protocols are analysed on simulated data (the "demo reports") in English
and Chinese; each must pass the report lint (analysis/report/lint.py), including the rendered
check that no number, code or date is broken across lines.
"""

from __future__ import annotations

import datetime
import functools
import io
import re
from dataclasses import replace
from pathlib import Path

import pikepdf
import pytest
from pypdf import PdfReader
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.platypus import Paragraph, SimpleDocTemplate, Table

from analysis.adam import source_dataset
from analysis.report import ReportSpec, TableBlock, TextBlock, build_report
from analysis.report.fonts import load_fonts
from analysis.report.lint import check_report, lint_pdf, lint_spec
from analysis.report.spec import Section
from analysis.report_builder import (
    Builder,
    ReportMeta,
    build_report_spec,
    fmt,
    fmt_p,
    in_chinese,
    lint_vocabulary,
    p_phrase,
    protocol_identity,
)
from analysis.sap import AnalysisResults, arm_labels, pooled_labels, redact_protocol, run_sap
from analysis.simulation import simulate_trial_data
from protocols.loader import load_protocol
from protocols.model import Protocol

LIBRARY = Path(__file__).resolve().parents[2] / "protocols" / "library"
# every library protocol (the three-arm adolescent trial tests one hypothesis per active arm)
DEMOS = ("cognitive_impairment", "pediatric_myopia", "type2_diabetes", "adolescent_depression")
GENERATED = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)


@functools.cache
def _protocol(name: str) -> Protocol:
    return load_protocol(LIBRARY / f"{name}.yaml")


@functools.cache
def _results(name: str) -> AnalysisResults:
    protocol = _protocol(name)
    data = simulate_trial_data(protocol, 120, seed=4,
                               effects={"hba1c_pct": {"app": -1.0},
                                        "adas_total": {"cogtrain": -3.0}})
    return run_sap(data, blinded=False, seed=9)


def _meta(protocol: Protocol, language: str = "en", **extra: object) -> ReportMeta:
    values: dict[str, object] = {
        "generated_at": GENERATED, "data_sha256": "0" * 64,
        "software_versions": {"dtx-trials": "0.1.0"}, "cutoff_on": None,
        "language": language, "page_size": "a4" if language == "zh" else "letter",
        "protocol": protocol, "first_consent_on": datetime.date(2026, 1, 5),
        "last_visit_on": datetime.date(2026, 10, 30), "n_records": 6793, "n_locked": 6793,
        "last_locked_on": datetime.date(2026, 11, 2),
        **protocol_identity(protocol, language),  # type: ignore[arg-type]
    }
    values.update(extra)
    return ReportMeta(**values)  # type: ignore[arg-type]


@functools.cache
def _demo(name: str, language: str) -> tuple[ReportSpec, bytes]:
    protocol = _protocol(name)
    spec = build_report_spec(_results(name), _meta(protocol, language))
    return spec, build_report(spec)


def _flat(pdf: bytes) -> str:
    return " ".join(" ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(pdf)).pages)


def _tables(spec: ReportSpec) -> list[TableBlock]:
    out: list[TableBlock] = []

    def walk(section: Section) -> None:
        for block in section.blocks:
            if isinstance(block, Section):
                walk(block)
            elif isinstance(block, TableBlock):
                out.append(block)

    for section in spec.sections:
        walk(section)
    return out


# --- formats ---------------------------------------------------------------------------------


def test_p_values_follow_the_convention() -> None:
    assert fmt_p(0.00004) == "<0.001"
    assert fmt_p(0.0491) == "0.049"
    assert fmt_p(0.0496) == "0.0496"  # 3 decimals would print 0.050, which is not < 0.05
    assert fmt_p(0.9996) == ">0.999"
    assert fmt_p(None) == "not estimable"
    assert p_phrase(0.00001) == "p < 0.001" and p_phrase(0.2) == "p = 0.200"


def test_ci_bound_never_prints_negative_zero() -> None:
    assert fmt(-0.00045) == "-0.00045"
    assert fmt(1.2e-7) == "0.00000012"
    assert fmt(1.2e-8) == "1.2e-08"  # past 8 decimals: scientific notation
    assert fmt(2.8e-17) == "2.8e-17" and fmt(-2.2e-16, 2) == "-2.2e-16"
    assert fmt(9.96e-9) == "1.0e-08" and fmt(1.04e-8) == "1.0e-08"
    assert fmt(-0.0) == "0.000"
    assert fmt(0.0) == "0.000"
    assert fmt(-0.5934) == "-0.593"
    assert fmt(None) == "not estimable"


def test_each_endpoint_table_names_the_adam_dataset_its_analysis_read() -> None:
    """The source footnote of an endpoint's tables is the ADaM dataset named by the one
    naming rule the ADaM package follows (`analysis.adam.source_dataset`)."""
    protocol = _protocol("type2_diabetes")
    results = _results("type2_diabetes")
    builder = Builder(results, _meta(protocol))
    assert results.endpoints
    for endpoint in results.endpoints:
        expected = source_dataset(protocol, endpoint.id)
        assert endpoint.source_dataset == expected
        assert builder.source(endpoint.id).startswith(f"{expected}; ")
    assert builder.source("subject_level").startswith("ADSL; ")
    assert builder.source("adverse_events").startswith("ADAE; ")


# --- the demo reports pass the lint in both languages ------------------------------------------


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("name", DEMOS)
def test_demo_report_passes_the_lint(name: str, language: str) -> None:
    spec, pdf = _demo(name, language)
    codes, texts = lint_vocabulary(_protocol(name))
    check_report(pdf, spec, codes, texts)  # raises ReportLintError with every issue
    with pikepdf.open(io.BytesIO(pdf)) as document:
        box = [float(x) for x in document.pages[0].MediaBox]
    expected = A4 if language == "zh" else (612, 792)
    assert box[2:] == pytest.approx(list(expected), abs=0.01)


def test_lint_finds_english_left_in_the_chinese_edition() -> None:
    """A fixed text still in English fails the Chinese report's lint; protocol labels, units
    and data printed as recorded (verbatim AE terms, free-text reasons) do not."""
    spec, _ = _demo("type2_diabetes", "zh")
    codes, texts = lint_vocabulary(_protocol("type2_diabetes"))
    assert lint_spec(spec, codes, texts) == []
    first = spec.sections[0]
    english = replace(first, blocks=(*first.blocks,
                                     TextBlock("缺失数据：missing at random given the covariates")))
    issues = lint_spec(replace(spec, sections=(english, *spec.sections[1:])), codes, texts)
    assert [i.rule for i in issues] == ["untranslated"]
    assert "missing at random given the covariates" in issues[0].message
    recorded = replace(spec, sections=(replace(first, blocks=(
        *first.blocks, TextBlock("不良事件：sore throat (未编码)"))), *spec.sections[1:]),
        recorded_texts=(*spec.recorded_texts, "sore throat"))
    assert lint_spec(recorded, codes, texts) == []


def test_chinese_edition_keeps_a_recorded_term_inside_a_fixed_text_as_recorded() -> None:
    """A verbatim AE term in a table cell ("   eye strain (no data)") is data: the Chinese
    edition translates the text around it, never a word of it ("eye" is also a formula word)."""
    spec, _ = _demo("type2_diabetes", "en")
    table = TableBlock("14.3.1.2", "AEs", "Safety set", 1, ("Term", "n"),
                       (("   eye strain (no data)", "3"), ("eye", "1")))
    english = replace(spec, sections=(Section("14.3", "Safety", (table,)),),
                      recorded_texts=("eye strain",))
    chinese = in_chinese(english, None)
    [[cell, _], [word, _]] = chinese.sections[0].blocks[0].rows  # type: ignore[union-attr]
    assert cell == "   eye strain (无数据)"
    assert word == "眼"  # outside recorded data the formula word is translated


def test_chinese_edition_translates_model_handling_and_reason_texts() -> None:
    _, pdf = _demo("cognitive_impairment", "zh")
    text = _flat(pdf)
    for english in ("missing at random", "LS means by", "post-event", "withdrew consent",
                    "dtx-trials analysis run", "residual df", "not meeting eligibility",
                    "(years)", "pivotal", "randomization pending"):
        assert english not in text, english
    for chinese in ("随机缺失", "LS 均值", "撤回知情同意", "残差自由度", "关键性研究", "(年)"):
        assert chinese in text, chinese


def test_lint_finds_a_number_broken_across_lines(tmp_path: Path) -> None:
    """Render a cell the old way (ReportLab splits a long word anywhere) and catch it."""
    fonts = load_fonts()
    style = ParagraphStyle("narrow", fontName=fonts.regular, fontSize=9, splitLongWords=1)
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, initialFontName=fonts.regular)
    doc.build([Table([[Paragraph("0.0491234567", style)]], colWidths=[30])])
    spec = replace(_demo("type2_diabetes", "en")[0], sections=(
        Section("1", "One", (TableBlock("1.1", "t", "p", 1, ("a",), (("0.0491234567",),)),)),))
    issues = lint_pdf(buffer.getvalue(), spec)
    assert [i.rule for i in issues] == ["wrapped-number"]


def test_lint_finds_codes_gaps_blanks_and_na() -> None:
    spec = _demo("cognitive_impairment", "en")[0]
    bad = replace(spec, sections=(Section("14.2", "Efficacy", (
        TableBlock("14.2.1", "ok", "FAS", 1, ("Arm", "p"), (("sham", "NA"),)),
        TableBlock("14.2.3", "gap", "FAS", 1, ("Model", "x", "y"), (("gee_per_eye", "", "1"),)),
    )),))
    rules = sorted({i.rule for i in lint_spec(bad, ["sham", "week_24"])})
    assert rules == ["empty-cell", "missing-reason", "number-gap", "unknown-label"]


# --- metadata ----------------------------------------------------------------------------------


def test_rpt_01_title_page_states_facts_from_protocol_and_data() -> None:
    _, pdf = _demo("cognitive_impairment", "en")
    first = " ".join(PdfReader(io.BytesIO(pdf)).pages[0].extract_text().split())
    for expected in ("CogTrain adaptive cognitive training app version 2.1.0",
                     "Mild cognitive impairment in adults aged 60-85",
                     "dtx-trials example sponsor", "2026-01-05", "2026-10-30",
                     "records locked: 6,793 of 6,793 on 2026-11-02",
                     "none set: all data captured up to the report date"):
        assert expected in first, expected
    assert "Trial sponsor" not in first
    assert "This trial was conducted" not in first  # no claim the system cannot know
    assert "DRAFT" not in _flat(pdf)


def test_no_cutoff_is_never_printed_as_today_and_unlocked_data_is_a_draft() -> None:
    protocol = _protocol("type2_diabetes")
    meta = _meta(protocol, n_locked=0, last_locked_on=None)
    spec = build_report_spec(_results("type2_diabetes"), meta)
    pdf = build_report(spec)
    pages = [" ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(pdf)).pages]
    assert spec.is_draft and spec.data_cutoff_on is None
    for page in pages:
        assert "No data cut-off set" in page
        assert "DRAFT: data NOT locked (interim/draft)" in page
        assert "Data cut-off 2026-11-23" not in page
    assert "records locked: 0 of 6,793; data NOT locked: interim/draft report" in pages[0]


def test_signature_status_on_the_title_page() -> None:
    """Only the final report (unblinded, all records locked) is signed; the title page says
    whether, by whom, or why not (item 6; the signing itself: tests/dtx_trials)."""
    protocol, results = _protocol("type2_diabetes"), _results("type2_diabetes")
    signer = "dtx report signing (certificate SHA-256 " + "ab" * 32 + ")"
    final = build_report_spec(results, _meta(protocol, signer=signer)).signature_status
    assert final == f"PAdES digital signature of this file by {signer}; check it with dtx " \
        "report verify"
    keyless = build_report_spec(results, _meta(protocol)).signature_status
    assert keyless.startswith("NOT signed: this instance has no report-signing key")
    draft = build_report_spec(results, _meta(protocol, n_locked=10, signer=signer))
    assert draft.is_draft and draft.signature_status.endswith("this report is data not locked")
    zh = build_report_spec(results, _meta(protocol, "zh", signer=signer)).signature_status
    assert zh.startswith("本文件带有 PAdES 数字签名")


def test_protocol_without_sponsor_or_product_says_so() -> None:
    protocol = replace(_protocol("type2_diabetes"), sponsor=None, product=None, indication=None)
    spec = build_report_spec(_results("type2_diabetes"), _meta(protocol))
    assert spec.sponsor == spec.indication == spec.product_name == "not stated in the protocol"


# --- ICH E3 content ------------------------------------------------------------------------------


def test_rpt_04_analysis_sets_and_rpt_03_completed_row() -> None:
    spec, _ = _demo("type2_diabetes", "en")
    tables = {t.title: t for t in _tables(spec)}
    sets = tables["Analysis sets"]
    assert [r[0] for r in sets.rows] == ["Full analysis set", "Per-protocol set", "Safety set"]
    assert all(r[1] for r in sets.rows)  # every set has its definition
    disposition = tables["Disposition of randomized participants"]
    labels = [r[0] for r in disposition.rows]
    assert "Completed the study" in labels and "Discontinued the study" in labels
    randomized = _results("type2_diabetes").disposition["randomized"]
    assert sets.rows[0][-1] == str(randomized)


def test_baseline_table_has_every_protocol_baseline_variable() -> None:
    spec, _ = _demo("cognitive_impairment", "en")
    baseline = next(t for t in _tables(spec) if t.number == "14.1.1")
    labels = {r[0] for r in baseline.rows}
    assert any("ADAS-Cog" in label for label in labels)
    assert len(baseline.rows) > 40  # not truncated to the first 16 fields


def test_numbers_are_continuous_and_labels_replace_codes() -> None:
    spec, pdf = _demo("pediatric_myopia", "en")
    text = _flat(pdf)
    assert "gee_per_eye" not in text and "coaching - education" not in text
    assert "Outdoor and near-work coaching app vs Eye-health education app (control)" in text
    numbers = [t.number for t in _tables(spec)]
    assert all(re.fullmatch(r"[\d.]+", n) for n in numbers)


def test_sensitivity_and_supplementary_are_separate_and_not_run_has_reasons() -> None:
    spec, _ = _demo("type2_diabetes", "en")
    titles = [t.title for t in _tables(spec)]
    primary = "Change in HbA1c from baseline to week 24"
    assert f"{primary}: supplementary analyses (other estimands)" in titles
    assert f"{primary}: sensitivity analyses (same estimand)" not in titles  # both are other
    myopia, _ = _demo("pediatric_myopia", "en")
    not_run = next(t for t in _tables(myopia) if t.title.startswith("Pre-specified analyses"))
    analyses = " ".join(r[1] for r in not_run.rows)
    assert "Parental myopia" in analyses
    assert "Multiple imputation under MAR by arm" in analyses
    assert all(r[2] for r in not_run.rows)  # a reason on every row
    assert "not run" not in " ".join(" ".join(r) for t in _tables(myopia) for r in t.rows
                                     if not t.title.startswith("Pre-specified"))


def test_rpt_07_ls_means_events_and_medians_spelled_out() -> None:
    spec, pdf = _demo("type2_diabetes", "en")
    results = _results("type2_diabetes")
    h = results.endpoints[0].headline
    assert h is not None
    text = _flat(pdf)
    assert (f"estimate {fmt(h['estimate'])} (95% CI {fmt(h['ci_low'])}, {fmt(h['ci_high'])}), "
            f"{p_phrase(h['p_value'])}") in text
    summary = next(t for t in _tables(spec) if t.number == "14.2.1.1")
    assert "LS mean (95% CI)" in summary.columns
    km = next(t for t in _tables(spec) if "median time to event" in t.title)
    assert km.columns[:3] == ("Arm", "Events", "Median (days)")
    assert "NA" not in " ".join(" ".join(r) for r in km.rows)


def test_rpt_12_safety_tables_by_soc_pt_severity_relationship_and_exposure() -> None:
    protocol = _protocol("cognitive_impairment")
    results = _results("cognitive_impairment")
    events = list(results.safety["events"])
    assert events, "the simulation records adverse events"
    coded = dict(events[0], soc="Nervous system disorders", pt="Headache")
    results = replace(results, safety={**results.safety, "events": [coded, *events[1:]]})
    spec = build_report_spec(results, _meta(protocol))
    tables = {t.title: t for t in _tables(spec)}
    soc = tables["Adverse events by system organ class and preferred term"]
    labels = [r[0] for r in soc.rows]
    assert "Nervous system disorders" in labels and "   Headache" in labels
    assert any(label.endswith("(uncoded)") for label in labels)
    assert "uncoded" in labels  # the uncoded terms are grouped, never given invented codes
    severity = tables["Adverse events by maximum severity"]
    assert [r[0] for r in severity.rows] == ["Mild", "Moderate", "Severe"]
    assert "Adverse events by strongest relationship to the DTx" in tables
    overview = [r[0] for r in tables["Overview of adverse events"].rows]
    assert "Deaths" in overview and "Any adverse event leading to discontinuation" in overview
    exposure = tables["Exposure and DTx adherence"]
    assert any("Days with use" in r[0] for r in exposure.rows)


# --- Chinese edition and blinding ------------------------------------------------------------


def test_chinese_edition_uses_protocol_zh_labels_and_embedded_cjk_font() -> None:
    _, pdf = _demo("cognitive_impairment", "zh")
    text = _flat(pdf)
    for expected in ("统计分析报告", "自适应认知训练", "研究受试者", "安全性分析集", "第 1 页"):
        assert expected in text, expected
    with pikepdf.open(io.BytesIO(pdf)) as document:
        fonts = {str(f.get("/BaseFont")) for page in document.pages
                 for f in page.Resources.get("/Font", {}).values()}
    assert any("CJK" in f or "WenQuanYi" in f or "Micro" in f for f in fonts), fonts


def test_blinded_report_refuses_real_arm_names() -> None:
    protocol = load_protocol(LIBRARY / "type2_diabetes.yaml")
    data = simulate_trial_data(protocol, 60, seed=2)
    forbidden = [a.name.en for a in protocol.arms] + [a.code for a in protocol.arms]
    shown = redact_protocol(protocol)
    for labels, expected in ((arm_labels(protocol, b"r" * 32), "Arm A"),
                             (pooled_labels(protocol), "All participants (pooled)")):
        results = run_sap(data, blinded=True, labels=labels, seed=3)
        meta = _meta(shown)
        pdf = build_report(build_report_spec(results, meta), forbidden_terms=forbidden)
        text = _flat(pdf)
        for term in forbidden:
            assert not re.search(rf"(?<![\w-]){re.escape(term)}(?![\w-])", text), term
        assert expected in text
        # a blinded report is never signed, even on locked data, and says so
        assert "Electronic signature none: only the final report (unblinded, every record " \
            "locked) is signed; this report is blinded" in text


def test_i18n_every_fixed_text_exists_in_both_languages() -> None:
    from analysis.report.i18n import TEXTS, text

    for key, (en, zh) in TEXTS.items():
        assert en and zh, key
        values = {"date": "2026-01-01", "at": "x", "sha": "y", "page": 1, "total": 2,
                  "source": "s", "population": "p", "n": 3, "name": "n", "version": "v",
                  "arm": "a"}
        assert text(key, "en", **values) and text(key, "zh", **values)
