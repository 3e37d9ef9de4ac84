"""Multiplicity for many arms and endpoints (issue #17): the procedures against the worked
examples M-1..M-3 of /work/shared/reference/estimands-and-missing-data.md §5 (R p.adjust and
the Bretz et al. 2009 graph, derived by hand there and cross-checked by closed testing), and a
three-arm protocol whose confirmatory family holds both active arms."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from analysis.multiplicity import (
    adjust_bonferroni,
    adjust_fixed_sequence,
    adjust_graphical,
    adjust_hochberg,
    adjust_holm,
)
from analysis.report import build_report
from analysis.report_builder import build_report_spec
from analysis.results import AnalysisError
from analysis.sap import arm_labels, run_sap
from analysis.simulation import simulate_trial_data
from protocols.loader import load_protocol_report, load_protocol_text

THREE_ARM = Path(__file__).parent / "data" / "three_arm.yaml"
M3_GRAPH = [[0, 0.5, 0.5, 0], [0.5, 0, 0, 0.5], [0, 1, 0, 0], [1, 0, 0, 0]]


def adjusted(result) -> list[float]:  # type: ignore[no-untyped-def]
    return [d.adjusted_p_value for d in result.decisions]


def rejected(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [d.endpoint for d in result.decisions if d.rejected]


def named(ps: list[float]) -> list[tuple[str, float]]:
    return [(f"H{i}", p) for i, p in enumerate(ps, start=1)]


def test_m1_stepwise_procedures_match_r_p_adjust() -> None:
    tests = named([0.010, 0.020, 0.030, 0.040])
    assert adjusted(adjust_bonferroni(tests)) == pytest.approx([0.04, 0.08, 0.12, 0.16])
    assert adjusted(adjust_holm(tests)) == pytest.approx([0.04, 0.06, 0.06, 0.06])
    assert adjusted(adjust_hochberg(tests)) == pytest.approx([0.04] * 4)
    assert rejected(adjust_hochberg(tests)) == ["H1", "H2", "H3", "H4"]
    unsorted = named([0.012, 0.030, 0.021, 0.047])
    assert adjusted(adjust_holm(unsorted)) == pytest.approx([0.048, 0.063, 0.063, 0.063])
    assert adjusted(adjust_hochberg(unsorted)) == pytest.approx([0.047] * 4)
    fixed = adjust_fixed_sequence(named([0.01, 0.06, 0.001]))
    assert adjusted(fixed) == pytest.approx([0.01, 0.06, 0.06])
    assert [d.tested for d in fixed.decisions] == [True, True, False]


def test_m2_parallel_gatekeeping_as_a_graph() -> None:
    graph = [[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5], [0, 0, 0, 1], [0, 0, 1, 0]]
    result = adjust_graphical(named([0.015, 0.040, 0.010, 0.020]), 0.05, [0.5, 0.5, 0, 0],
                              graph)
    assert adjusted(result) == pytest.approx([0.03, 0.08, 0.04, 0.04])
    assert rejected(result) == ["H1", "H3", "H4"]


def test_m3_graphical_procedure_bretz_2009() -> None:
    result = adjust_graphical(named([0.011, 0.004, 0.012, 0.027]), 0.025,
                              [0.5, 0.5, 0, 0], M3_GRAPH)
    assert adjusted(result) == pytest.approx([0.0146667, 0.008, 0.024, 0.027], rel=1e-5)
    assert rejected(result) == ["H1", "H2", "H3"]
    path = result.path
    assert [step["rejected"] for step in path] == ["H2", "H1", "H3", None]
    assert path[1]["weights"] == {"H1": 0.75, "H3": 0.0, "H4": 0.25}
    assert path[2]["levels"] == {"H3": 0.0125, "H4": 0.0125}
    assert path[3]["levels"] == {"H4": 0.025}
    variant = adjust_graphical(named([0.011, 0.004, 0.019, 0.027]), 0.025,
                               [0.5, 0.5, 0, 0], M3_GRAPH)
    assert adjusted(variant) == pytest.approx([0.0146667, 0.008, 0.038, 0.038], rel=1e-5)
    assert rejected(variant) == ["H1", "H2"]


def test_special_graphs_reproduce_holm_fixed_sequence_and_bonferroni() -> None:
    ps = [0.012, 0.030, 0.021, 0.047]
    third = 1 / 3
    holm = [[0 if i == j else third for j in range(4)] for i in range(4)]
    assert adjusted(adjust_graphical(named(ps), 0.05, [0.25] * 4, holm)) == pytest.approx(
        adjusted(adjust_holm(named(ps))))
    chain = [[1.0 if j == i + 1 else 0.0 for j in range(4)] for i in range(4)]
    assert adjusted(adjust_graphical(named(ps), 0.05, [1, 0, 0, 0], chain)) == pytest.approx(
        adjusted(adjust_fixed_sequence(named(ps))))
    zero = [[0.0] * 4 for _ in range(4)]
    assert adjusted(adjust_graphical(named(ps), 0.05, [0.25] * 4, zero)) == pytest.approx(
        adjusted(adjust_bonferroni(named(ps))))


def test_bad_graphs_are_refused() -> None:
    with pytest.raises(AnalysisError, match="sum to at most 1"):
        adjust_graphical(named([0.01, 0.02]), 0.05, [0.7, 0.7], [[0, 1], [1, 0]])
    with pytest.raises(AnalysisError, match="g_ii = 0"):
        adjust_graphical(named([0.01, 0.02]), 0.05, [0.5, 0.5], [[1, 0], [1, 0]])


# ------------------------------------------------------------------ the three-arm protocol


@pytest.fixture(scope="module")
def three_arm():  # type: ignore[no-untyped-def]
    protocol = load_protocol_text(THREE_ARM.read_text(encoding="utf-8"))
    data = simulate_trial_data(protocol, 150, seed=4,
                               effects={"memory": {"high": 8.0, "low": 4.0},
                                        "attention": {"high": 5.0}})
    return protocol, data, run_sap(data, blinded=False, seed=3)


def test_both_active_arms_are_in_the_confirmatory_family(three_arm) -> None:  # type: ignore[no-untyped-def]
    _, _, results = three_arm
    m = results.multiplicity
    assert m is not None and m["declared"] and m["procedure"] == "graphical"
    family = {f["id"]: f for f in m["family"]}
    assert {(f["endpoint"], f["arm"]) for f in family.values()} == {
        ("memory_w12", "low"), ("memory_w12", "high"), ("attention_w12", "low"),
        ("attention_w12", "high")}
    # each hypothesis carries its own arm's contrast and p-value from the endpoint's model
    for f in family.values():
        effects = results.endpoint(f["endpoint"]).result["effects"]  # type: ignore[index]
        mine = [e for e in effects if e["contrast"] == f"{f['arm']} - sham"]
        assert len(mine) == 1 and f["p_value"] == mine[0]["p_value"]
    # the adjusted p-values are the graphical procedure's on those p-values
    expected = adjust_graphical([(h, family[h]["p_value"]) for h in ("h1", "h2", "h3", "h4")],
                                0.05, [0.5, 0.5, 0, 0], M3_GRAPH)
    got = {d["endpoint"]: d["adjusted_p_value"] for d in m["result"]["decisions"]}
    assert got == {d.endpoint: d.adjusted_p_value for d in expected.decisions}
    assert m["result"]["path"][0]["rejected"] in ("h1", "h2")


def test_the_report_prints_adjusted_p_values_and_the_path(three_arm) -> None:  # type: ignore[no-untyped-def]
    import io

    from pypdf import PdfReader

    from tests.analysis.test_report_builder import _meta

    protocol, _, results = three_arm
    pdf = build_report(build_report_spec(results, _meta(protocol)))
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    assert "Confirmatory family: adjusted p-values" in text
    assert "Rejection path" in text and "graphical procedure" in text


def test_undeclared_family_still_holds_every_active_arm() -> None:
    doc = yaml.safe_load(THREE_ARM.read_text(encoding="utf-8"))
    del doc["multiplicity"]
    doc["endpoints"][0]["analysis"]["multiplicity_order"] = 1
    doc["endpoints"][1]["analysis"]["multiplicity_order"] = 2
    protocol = load_protocol_text(yaml.safe_dump(doc))
    results = run_sap(simulate_trial_data(protocol, 90, seed=2), blinded=False, seed=3)
    assert results.multiplicity is not None
    assert results.multiplicity["order"] == [
        "memory_w12 (high)", "memory_w12 (low)", "attention_w12 (high)", "attention_w12 (low)"]


def _errors(doc: dict) -> list[str]:  # type: ignore[type-arg]
    return [f"{i.path}: {i.message}" for i in load_protocol_report(yaml.safe_dump(doc)).errors]


def test_the_family_is_validated() -> None:
    base = yaml.safe_load(THREE_ARM.read_text(encoding="utf-8"))
    cases = {
        ("hypotheses", 0, "arm", "sham"): "arm 'sham' is the reference arm of 'memory_w12'",
        ("hypotheses", 0, "endpoint", "memory"): "unknown endpoint 'memory'",
        ("hypotheses", 0, "weight", 0.9): "initial weights sum to 1.4, more than 1",
        ("transitions", 0, "to", "h1"): "a hypothesis cannot pass its level to itself",
        ("transitions", 0, "weight", 0.9): "weights leaving 'h1' sum to 1.4, more than 1",
    }
    for (where, k, key, value), message in cases.items():
        doc = copy.deepcopy(base)
        doc["multiplicity"][where][k][key] = value
        assert any(message in e for e in _errors(doc)), (message, _errors(doc))
    doc = copy.deepcopy(base)
    doc["multiplicity"]["procedure"] = "holm"
    assert "multiplicity.transitions: transitions are not used by holm" in _errors(doc)
    doc = copy.deepcopy(base)
    doc["endpoints"][0]["analysis"]["multiplicity_order"] = 1
    assert any("multiplicity_order is not used when 'multiplicity' declares" in e
               for e in _errors(doc))


def test_a_blinded_run_names_hypotheses_without_arms(three_arm) -> None:  # type: ignore[no-untyped-def]
    _, data, _ = three_arm
    results = run_sap(data, blinded=True, labels=arm_labels(data.protocol, b"m" * 32), seed=3)
    m = results.multiplicity
    assert m is not None and m["order"] == ["H1", "H2", "H3", "H4"]
    assert {f["arm"] for f in m["family"]} <= {"A", "B", "C"}
    assert "high" not in str(m) and "low" not in str(m)
