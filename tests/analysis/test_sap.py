"""The SAP runner on every example protocol: each endpoint analysed, blinding, tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.sap import arm_labels, label_commitment, pooled_labels, run_sap
from analysis.simulation import simulate_trial_data
from protocols.loader import load_protocol

LIBRARY = Path(__file__).resolve().parents[2] / "protocols" / "library"
EFFECTS = {
    "cognitive_impairment.yaml": {"adas_total": {"cogtrain": -3.0}},
    "pediatric_myopia.yaml": {},
    "type2_diabetes.yaml": {"hba1c_pct": {"app": -0.8}},
}


@pytest.fixture(scope="module", params=sorted(EFFECTS))
def case(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    protocol = load_protocol(LIBRARY / request.param)
    data = simulate_trial_data(protocol, 150, seed=7, effects=EFFECTS[request.param])
    return protocol, data, run_sap(data, blinded=False, seed=11)


def test_every_endpoint_is_analysed(case) -> None:  # type: ignore[no-untyped-def]
    protocol, _, results = case
    assert [e.id for e in results.endpoints] == [e.id for e in protocol.endpoints]
    for endpoint in results.endpoints:
        assert endpoint.error is None, (endpoint.id, endpoint.error)
        assert endpoint.result is not None
        assert sum(endpoint.n_by_arm.values()) > 0
        if endpoint.model not in ("km_logrank",):
            assert endpoint.headline is not None, endpoint.id
            assert endpoint.headline["ci_low"] <= endpoint.headline["estimate"] <= \
                endpoint.headline["ci_high"]
    json.dumps(results.to_dict())  # plain JSON all the way down


def test_mean_by_visit_carries_the_scheduled_day(case) -> None:  # type: ignore[no-untyped-def]
    """The mean-over-time figures (PDF and statistician page) plot against the visit's day."""
    protocol, _, results = case
    days = {v.id: v.day for v in protocol.schedule.visits}
    rows = [row for endpoint in results.endpoints for row in endpoint.mean_by_visit]
    assert rows
    for row in rows:
        assert row["day"] == days[row["visit"]], row
    for endpoint in results.endpoints:
        if len({row["visit"] for row in endpoint.mean_by_visit}) > 1:
            assert len({row["day"] for row in endpoint.mean_by_visit}) > 1, endpoint.id


def test_disposition_adds_up(case) -> None:  # type: ignore[no-untyped-def]
    _, data, results = case
    d = results.disposition
    assert d["assessed"] == len(data.subjects)
    assert d["assessed"] == d["excluded"] + d["randomized"]
    assert d["excluded"] == sum(d["excluded_reasons"].values())
    assert d["randomized"] == sum(a["allocated"] for a in d["arms"].values())
    for label, arm in d["arms"].items():
        assert arm["analysed"] + arm["excluded_from_analysis"] == arm["allocated"]
        # every randomized participant is completed, ongoing or discontinued, each counted
        # from the data (RPT-03): completed is never the randomized less the withdrawn
        randomized = [s for s in data.subjects if s.arm == label]
        assert arm["completed"] == sum(1 for s in randomized if s.status == "completed")
        assert arm["ongoing"] == sum(1 for s in randomized if s.status == "randomized")
        assert arm["completed"] + arm["ongoing"] + arm["discontinued"] + \
            arm["lost_to_follow_up"] == arm["allocated"]


def test_blinded_run_carries_no_real_arm(case) -> None:  # type: ignore[no-untyped-def]
    protocol, data, _ = case
    labels = arm_labels(protocol, b"k" * 32)
    blinded = run_sap(data, blinded=True, labels=labels, seed=11)
    text = json.dumps(blinded.to_dict())
    for arm in protocol.arms:
        assert f'"{arm.code}"' not in text
        assert arm.name.en not in text
    assert sorted(labels.values()) == [chr(ord("A") + i) for i in range(len(protocol.arms))]
    assert {a["label"] for a in blinded.arms} == set(labels.values())
    assert blinded.review == "comparative"


def test_dummy_labels_depend_on_the_key_only() -> None:
    """The labels are HMAC-ordered: the seed (printed in reports) cannot reproduce them, and over
    many keys each arm takes each label about equally often (nothing correlates with the arm)."""
    protocol = load_protocol(LIBRARY / "type2_diabetes.yaml")
    first_arm = protocol.arms[0].code
    counts = {"A": 0, "B": 0}
    for i in range(400):
        counts[arm_labels(protocol, i.to_bytes(16, "big"))[first_arm]] += 1
    assert 160 < counts["A"] < 240, counts  # binomial(400, 1/2): 4 SD either side
    with pytest.raises(ValueError):
        arm_labels(protocol, b"short")


def test_label_commitment_binds_the_mapping() -> None:
    protocol = load_protocol(LIBRARY / "type2_diabetes.yaml")
    labels = arm_labels(protocol, b"q" * 32)
    swapped = {code: ("B" if label == "A" else "A") for code, label in labels.items()}
    nonce = b"n" * 32
    assert label_commitment(labels, nonce) == label_commitment(dict(labels), nonce)
    assert label_commitment(labels, nonce) != label_commitment(swapped, nonce)
    assert label_commitment(labels, nonce) != label_commitment(labels, b"m" * 32)


def test_pooled_review_compares_no_groups(case) -> None:  # type: ignore[no-untyped-def]
    protocol, data, unblinded = case
    pooled = run_sap(data, blinded=True, labels=pooled_labels(protocol), seed=11)
    assert pooled.review == "pooled"
    assert [a["label"] for a in pooled.arms] == ["All"]
    assert pooled.multiplicity is None
    for endpoint in pooled.endpoints:
        assert endpoint.headline is None and not endpoint.sensitivity and not endpoint.subgroups
        assert endpoint.error is None, endpoint.error
        assert list(endpoint.n_by_arm) == ["All"]
        assert endpoint.result is not None and "effects" not in endpoint.result
        figures = endpoint.result["pooled"]
        # the pooled n is the whole analysis set of the unblinded run
        assert figures["n"] == sum(unblinded.endpoint(endpoint.id).n_by_arm.values())
        if endpoint.model in ("km_logrank", "cox"):  # one curve of everyone: the event rate
            assert [c["arm"] for c in endpoint.result["curves"]] == ["All"]
            assert figures["events"] == sum(c for c in endpoint.result["curves"][0]["n_events"])
    text = json.dumps(pooled.to_dict())
    for arm in protocol.arms:
        assert f'"{arm.code}"' not in text


def test_treatment_effect_direction_and_sensitivity() -> None:
    protocol = load_protocol(LIBRARY / "type2_diabetes.yaml")
    data = simulate_trial_data(protocol, 240, seed=3, effects={"hba1c_pct": {"app": -1.5}})
    results = run_sap(data, blinded=False, seed=5)
    primary = results.endpoint("hba1c_change_w24")
    assert primary.headline is not None and primary.headline["estimate"] < 0
    methods = {s["method"]: s for s in primary.sensitivity}
    mi = methods["multiple_imputation_mar"]
    assert mi.get("status") != "not_run", mi
    assert mi["effects"][0]["n_imputations"] == 20
    assert methods["per_protocol"]["population"] == "per_protocol"
    assert primary.subgroups and primary.subgroups[0].get("status") != "not_run"
    assert results.multiplicity is not None
    assert results.multiplicity["order"][0] == "hba1c_change_w24"
