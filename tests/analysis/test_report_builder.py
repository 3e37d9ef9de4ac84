"""SAP results → submission PDF: every section present, numbers equal the JSON (RPT-02/07)."""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import pytest
from pypdf import PdfReader

from analysis.report import build_report
from analysis.report_builder import ReportMeta, build_report_spec, fmt, fmt_p
from analysis.sap import arm_labels, pooled_labels, run_sap
from analysis.simulation import simulate_trial_data
from protocols.loader import load_protocol

LIBRARY = Path(__file__).resolve().parents[2] / "protocols" / "library"


def _meta(protocol) -> ReportMeta:  # type: ignore[no-untyped-def]
    return ReportMeta(
        generated_at=datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC),
        data_sha256="0" * 64, software_versions={"dtx-trials": "0.1.0"},
        product_name=protocol.title.en[:60], product_version="1.0",
        indication=protocol.therapeutic_area, design="randomized, controlled",
        sponsor="dtx-trials example sponsor", phase=protocol.phase,
        cutoff_on=datetime.date(2026, 11, 1))


@pytest.mark.parametrize("name", ["type2_diabetes.yaml", "cognitive_impairment.yaml"])
def test_report_has_every_section_and_the_primary_numbers(name: str) -> None:
    protocol = load_protocol(LIBRARY / name)
    data = simulate_trial_data(protocol, 120, seed=4,
                           effects={"hba1c_pct": {"app": -1.0}, "adas_total": {"cogtrain": -3.0}})
    results = run_sap(data, blinded=False, seed=9)
    pdf = build_report(build_report_spec(results, _meta(protocol)))
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    flat = " ".join(text.split())
    for heading in ("Study participants", "Demographic and baseline characteristics",
                    "Efficacy", "Safety", "Serious adverse events", "Statistical methods",
                    "Discontinued participants", "Primary efficacy data"):
        assert heading in flat, heading
    primary = results.endpoints[0]
    assert primary.headline is not None
    h = primary.headline
    assert (f"estimate {fmt(h['estimate'])} (95% CI {fmt(h['ci_low'])}, {fmt(h['ci_high'])}), "
            f"p = {fmt_p(h['p_value'])}") in flat


def test_blinded_report_refuses_real_arm_names() -> None:
    protocol = load_protocol(LIBRARY / "type2_diabetes.yaml")
    data = simulate_trial_data(protocol, 60, seed=2)
    forbidden = [a.name.en for a in protocol.arms] + [a.code for a in protocol.arms]
    for labels, shown in ((arm_labels(protocol, b"r" * 32), "Arm A"),
                          (pooled_labels(protocol), "all arms pooled (blinded data review)")):
        results = run_sap(data, blinded=True, labels=labels, seed=3)
        pdf = build_report(build_report_spec(results, _meta(protocol)), forbidden_terms=forbidden)
        text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
        for term in forbidden:
            assert term not in text
        assert shown in text
