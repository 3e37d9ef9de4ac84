"""ADaM from the SAP's analysis data: shapes (cdisc-package.md §4, findings 28-30 of §9),
blinding, no invented values, and traceability of every library protocol's primary analysis
to the ANL01FL records of the dataset the result names."""

from __future__ import annotations

import dataclasses
import datetime
from collections import defaultdict
from functools import cache

import pytest

from analysis.adam import AdamError, build_adae, build_adam, build_adsl, source_dataset
from analysis.datasets import TrialData, used_the_dtx
from analysis.exports.metadata import sas_date
from analysis.exports.xport import XptDataset, XptVariable, validate_dataset
from analysis.sap import AnalysisResults, run_sap
from analysis.simulation import simulate_trial_data
from protocols.loader import library_protocol_paths, load_protocol
from protocols.model import EstimandEvent, Protocol

LIBRARY = sorted(library_protocol_paths())
POPULATION_FLAG = {"itt": "ITTFL", "fas": "FASFL", "safety": "SAFFL",
                   "per_protocol": "PPROTFL"}


@cache
def library(name: str) -> Protocol:
    return load_protocol(library_protocol_paths()[name])


@cache
def trial(name: str) -> TrialData:
    return simulate_trial_data(library(name), 60, seed=3)


@cache
def sap(name: str) -> AnalysisResults:
    return run_sap(trial(name), blinded=False)


def records(dataset: XptDataset) -> list[dict[str, object]]:
    names = [v.name for v in dataset.variables]
    return [dict(zip(names, row, strict=True)) for row in dataset.rows]


def by_name(datasets: list[XptDataset]) -> dict[str, XptDataset]:
    return {d.name: d for d in datasets}


def assert_traces(data: TrialData, endpoint_id: str, result: AnalysisResults,
                  datasets: list[XptDataset]) -> None:
    """N, missing and per-visit n/mean of the SAP result recomputed from ADaM records."""
    protocol = data.protocol
    endpoint = protocol.endpoint(endpoint_id)
    analysis = result.endpoint(endpoint_id)
    assert analysis.error is None
    assert analysis.source_dataset == source_dataset(protocol, endpoint_id)
    found = by_name(datasets)
    bds = records(found[analysis.source_dataset])
    adsl = records(found["ADSL"])
    code_of = {arm.name.en: arm.code for arm in protocol.arms}
    visit_of = {v.label.en: v.id for v in protocol.schedule.visits}
    flag = POPULATION_FLAG[endpoint.estimand.analysis_set]
    n = defaultdict(int)
    for row in adsl:
        if row[flag] == "Y":
            n[code_of[str(row["TRT01P"])]] += 1
    assert dict(n) == {k: v for k, v in analysis.n_by_arm.items() if v}
    outcome = "CHG" if endpoint.analysis.change_from_baseline else "AVAL"
    analysed = [r for r in bds if r["ANL01FL"] == "Y"]
    assert all(r[outcome] is not None for r in analysed)
    subjects = defaultdict(set)
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in analysed:
        arm = code_of[str(row["TRTP"])]
        subjects[arm].add(row["USUBJID"])
        groups[(arm, visit_of[str(row["AVISIT"])])].append(float(row[outcome]))  # type: ignore[arg-type]
    missing = {arm: analysis.n_by_arm[arm] - len(subjects[arm]) for arm in analysis.n_by_arm}
    assert missing == dict(analysis.n_missing_by_arm)
    reported = {(m["arm"], m["visit"]): m for m in analysis.mean_by_visit}
    assert set(reported) == set(groups)
    for key, values in groups.items():
        assert reported[key]["n"] == len(values)
        assert reported[key]["mean"] == pytest.approx(sum(values) / len(values), rel=1e-12,
                                                      abs=1e-12)


@pytest.mark.parametrize("name", LIBRARY)
def test_adam_primary_analysis_traces_to_bds_records(name: str) -> None:
    """For each library protocol: the primary endpoint's N by arm equals the ADSL population
    flag count, and its analysed n and arm means per visit equal the ANL01FL records of the
    BDS dataset the result names (unblinded)."""
    data = trial(name)
    datasets = build_adam(data, blinded=False)
    primary = data.protocol.primary_endpoints[0]
    assert_traces(data, primary.id, sap(name), datasets)


@pytest.mark.parametrize("name", LIBRARY)
def test_adam_every_continuous_endpoint_traces(name: str) -> None:
    """The same holds for every continuous endpoint the SAP reports."""
    data = trial(name)
    datasets = build_adam(data, blinded=False)
    result = sap(name)
    for endpoint in data.protocol.endpoints:
        if endpoint.analysis.model in ("ancova", "mmrm", "gee_per_eye"):
            assert_traces(data, endpoint.id, result, datasets)


def _with_strategy(protocol: Protocol, endpoint_id: str, event: str, strategy: str,
                   composite_value: float | None = None) -> Protocol:
    endpoints = []
    for e in protocol.endpoints:
        if e.id == endpoint_id:
            estimand = dataclasses.replace(
                e.estimand,
                intercurrent_events=(EstimandEvent(event, strategy,  # type: ignore[arg-type]
                                                   composite_value),))
            e = dataclasses.replace(e, estimand=estimand)
        endpoints.append(e)
    return dataclasses.replace(protocol, endpoints=tuple(endpoints))


def _earlier(data: TrialData, event_id: str, days: int = 30) -> TrialData:
    """Move every recorded date of a form-detected event ``days`` earlier (the simulated
    data date it on the visit where it is reported, so it never precedes an assessment);
    every other subject keeps its dates, so both arms keep analysable values."""
    field = data.protocol.intercurrent_event(event_id).date_field
    assert field is not None
    subjects = []
    for i, s in enumerate(data.subjects):
        visits = {}
        for visit, values in s.visits.items():
            value = values.get(field)
            if isinstance(value, str) and i % 2:
                moved = datetime.date.fromisoformat(value) - datetime.timedelta(days=days)
                values = {**values, field: moved.isoformat()}
            visits[visit] = values
        subjects.append(dataclasses.replace(s, visits=visits))
    return dataclasses.replace(data, subjects=tuple(subjects))


@pytest.mark.parametrize(("name", "endpoint_id", "event", "strategy", "dtype", "shift"), [
    ("type2_diabetes", "hba1c_change_w24", "rescue", "while_on_treatment", "LOCF", 45),
    ("type2_diabetes", "hba1c_change_w24", "rescue", "composite", "COMPOSITE", 45),
    ("cognitive_impairment", "adas_change_w24", "started_achei", "while_on_treatment", None,
     45),
    ("cognitive_impairment", "adas_change_w24", "started_achei", "hypothetical", None, 45),
])
def test_adam_intercurrent_strategies_trace(name: str, endpoint_id: str, event: str,
                                            strategy: str, dtype: str | None,
                                            shift: int) -> None:
    """Each strategy leaves the observed record unflagged and, when it replaces the value,
    adds a DTYPE record carrying the analysed value; the SAP's figures still trace."""
    protocol = _with_strategy(library(name), endpoint_id, event, strategy,
                              0.0 if strategy == "composite" else None)
    data = _earlier(dataclasses.replace(trial(name), protocol=protocol), event, shift)
    result = run_sap(data, blinded=False)
    datasets = build_adam(data, blinded=False)
    assert_traces(data, endpoint_id, result, datasets)
    bds = records(by_name(datasets)[source_dataset(protocol, endpoint_id)])
    governed = [r for r in bds if r["ICEID"] == event]
    assert governed, "the simulated data hold the event"
    assert all(r["ICESTRAT"] == strategy for r in governed)
    derived = [r for r in bds if r["DTYPE"] is not None]
    if dtype is None:
        assert not derived
        assert all(r["ANL01FL"] is None for r in governed)
    else:
        assert derived and {r["DTYPE"] for r in derived} == {dtype}
        assert all(r["ANL01FL"] == "Y" for r in derived if r["CHG"] is not None)
        observed = [r for r in governed if r["DTYPE"] is None]
        assert all(r["ANL01FL"] is None for r in observed)


@pytest.mark.parametrize("name", LIBRARY)
def test_cdisc9_28_adsl_one_record_per_subject_with_yn_population_flags(name: str) -> None:
    data = trial(name)
    adsl = build_adam(data, blinded=False)[0]
    validate_dataset(adsl)
    rows = records(adsl)
    assert [r["USUBJID"] for r in rows] == [
        f"{data.protocol.code}-{s.subject}" for s in data.subjects]
    assert len({r["USUBJID"] for r in rows}) == len(rows)
    for row, subject in zip(rows, data.subjects, strict=True):
        for flag in ("RANDFL", "ITTFL", "FASFL", "SAFFL", "PPROTFL"):
            assert row[flag] in ("Y", "N")
        assert (row["RANDFL"] == "Y") == (subject.arm is not None)
        assert row["PPROTFL"] == ("Y" if subject.arm is not None and subject.adherent is not False
                                  and subject.withdrawn_on is None else "N")
        if subject.arm is not None:
            assert row["TRT01P"] == data.protocol.arm(subject.arm).name.en
            # the actual treatment only with recorded use of the DTx (as DM's ACTARM)
            used = used_the_dtx(data, subject)
            assert used is not None  # every library protocol records use
            assert row["TRT01A"] == (row["TRT01P"] if used else None)
            assert row["TRTSDT"] == sas_date(subject.randomized_on)  # type: ignore[arg-type]
            assert row["STRAT1R"] == subject.strata[data.protocol.randomization.factors[0].id]
            assert row["EOSSTT"] == ("DISCONTINUED" if subject.withdrawn_on else "ONGOING")
        else:
            assert row["TRT01P"] is None and row["TRTSDT"] is None and row["AIE1FL"] is None


def test_adsl_intercurrent_event_flags_and_dates_from_the_protocol_events() -> None:
    data = trial("type2_diabetes")
    rows = records(build_adam(data, blinded=False)[0])
    events = [e.id for e in data.protocol.intercurrent_events]
    assert events == ["rescue", "stopped_app", "discontinued"]
    from analysis.datasets import subject_events

    seen = 0
    for row, subject in zip(rows, data.subjects, strict=True):
        if subject.arm is None:
            continue
        found = subject_events(data, subject)
        for n, event in enumerate(events, start=1):
            assert row[f"AIE{n}FL"] == ("Y" if event in found else "N")
            assert row[f"AIE{n}DT"] == (sas_date(found[event].on) if event in found else None)
            seen += event in found
    assert seen > 0
    discontinued = [r for r, s in zip(rows, data.subjects, strict=True) if s.withdrawn_on]
    assert discontinued and all(r["AIE3FL"] == "Y" for r in discontinued)


@pytest.mark.parametrize("name", LIBRARY)
def test_adam_blinded_build_has_no_arm_correlated_variable(name: str) -> None:
    data = trial(name)
    arm_terms = {a.code for a in data.protocol.arms} | {a.name.en for a in data.protocol.arms}
    datasets = build_adam(data, blinded=True)
    forbidden = {"ARM", "ACTARM", "TRT01P", "TRT01PN", "TRT01A", "TRT01AN", "TRTP", "TRTPN",
                 "TRTA", "TRTAN"}
    for dataset in datasets:
        assert not forbidden & {v.name for v in dataset.variables}, dataset.name
        for row in dataset.rows:
            assert not arm_terms & {c for c in row if isinstance(c, str)}, dataset.name
    unblinded = by_name(build_adam(data, blinded=False))
    for dataset in datasets:  # the same records, only the treatment columns removed
        assert len(dataset.rows) == len(unblinded[dataset.name].rows)


@pytest.mark.parametrize("name", LIBRARY)
def test_cdisc9_29_bds_rules(name: str) -> None:
    """PARAMCD↔PARAM 1:1, at most one ABLFL per subject×parameter, BASE = AVAL of the ABLFL
    record, CHG = AVAL − BASE, AVISIT↔AVISITN 1:1, DTYPE only on derived records."""
    data = trial(name)
    for dataset in build_adam(data, blinded=False):
        names = {v.name for v in dataset.variables}
        if "ABLFL" not in names:
            continue
        validate_dataset(dataset)
        rows = records(dataset)
        assert len({(r["PARAMCD"], r["PARAM"]) for r in rows}) == len(
            {r["PARAMCD"] for r in rows})
        assert len({(r["AVISIT"], r["AVISITN"]) for r in rows}) == len(
            {r["AVISIT"] for r in rows})
        baseline: dict[tuple[object, object], object] = {}
        for r in rows:
            if r["ABLFL"] == "Y":
                key = (r["USUBJID"], r["PARAMCD"])
                assert key not in baseline
                baseline[key] = r["AVAL"]
        for r in rows:
            key = (r["USUBJID"], r["PARAMCD"])
            if key in baseline:
                assert r["BASE"] == baseline[key]
            if r["CHG"] is not None and r["DTYPE"] is None:
                assert r["CHG"] == pytest.approx(float(r["AVAL"]) - float(r["BASE"]))  # type: ignore[arg-type]


def test_adtte_censoring_and_event_from_the_analysis_data() -> None:
    data = trial("type2_diabetes")
    adtte = by_name(build_adam(data, blinded=False))["ADTTE"]
    validate_dataset(adtte)
    rows = records(adtte)
    assert {r["PARAMCD"] for r in rows} == {"TIMETORE", "TIMETOR1"}
    result = sap("type2_diabetes")
    for row in rows:
        assert row["CNSR"] in (0, 1, 2)
        assert row["ADT"] == row["STARTDT"] + row["AVAL"]  # type: ignore[operator]
        if row["CNSR"] == 2:
            assert row["ICEID"] == "discontinued"
            assert row["ICESTRAT"] == "while_on_treatment"
        assert row["EVNTDESC"]
        assert (row["CNSDTDSC"] is None) == (row["CNSR"] == 0)
    km = result.endpoint("time_to_rescue_km")
    assert km.source_dataset == "ADTTE"
    assert {r["CNSR"] for r in rows} >= {0, 1}


def _ae(rows: list[tuple[object, ...]]) -> XptDataset:
    names = ("STUDYID", "DOMAIN", "USUBJID", "AESEQ", "AETERM", "AEDECOD", "AESEV", "AEREL",
             "AESTDTC", "AEENDTC")
    variables = tuple(XptVariable(n, n.title(), "num" if n == "AESEQ" else "char")
                      for n in names)
    return XptDataset("AE", "Adverse Events", variables, tuple(rows))  # type: ignore[arg-type]


def test_adae_copies_severity_and_causality_as_collected_and_derives_trtemfl() -> None:
    data = trial("type2_diabetes")
    adsl = build_adsl(data, studyid=data.protocol.code, blinded=False)
    subject = next(s for s in data.subjects if s.arm is not None)
    start = subject.randomized_on
    assert start is not None
    study, sid = data.protocol.code, f"{data.protocol.code}-{subject.subject}"
    before = (start - datetime.timedelta(days=40)).isoformat()
    after = (start + datetime.timedelta(days=3)).isoformat()
    ae = _ae([
        (study, "AE", sid, 1, "Headache", "HEADACHE", "SEVERE", "RELATED", after, after),
        (study, "AE", sid, 2, "头晕", "DIZZINESS", None, None, before[:7], None),
        (study, "AE", sid, 3, "Nausea", "NAUSEA", "MODERATE", "NOT RELATED", after[:4], None),
        (study, "AE", sid, 4, "Rash", "RASH", "MILD", "POSSIBLY RELATED", before, before),
    ])
    adae = records(build_adae(ae, adsl, blinded=False))
    assert [r["ASEV"] for r in adae] == ["SEVERE", None, "MODERATE", "MILD"]
    assert [r["AREL"] for r in adae] == ["RELATED", None, "NOT RELATED", "POSSIBLY RELATED"]
    assert [r["AETERM"] for r in adae][1] == "头晕"
    assert adae[0]["ASTDT"] == sas_date(start) + 3 and adae[0]["ASTDY"] == 4
    assert adae[1]["ASTDT"] is None  # partial date: never imputed
    assert [r["TRTEMFL"] for r in adae] == ["Y", None, "Y", None]
    assert adae[0]["TRTA"] == data.protocol.arm(subject.arm or "").name.en
    blinded = build_adae(ae, build_adsl(data, studyid=study, blinded=True), blinded=True)
    assert "TRTA" not in {v.name for v in blinded.variables}
    with pytest.raises(AdamError, match="not in ADSL"):
        build_adae(_ae([(study, "AE", "NOPE", 1, "x", "X", None, None, after, None)]), adsl,
                   blinded=False)


def test_adam_missing_required_input_is_an_error_not_a_default() -> None:
    data = trial("cognitive_impairment")
    broken = list(data.subjects)
    index = next(i for i, s in enumerate(broken) if s.arm is not None)
    broken[index] = dataclasses.replace(broken[index], strata={})
    with pytest.raises(AdamError, match="stratification factor"):
        build_adam(dataclasses.replace(data, subjects=tuple(broken)), blinded=True)
    dm = XptDataset("DM", "Demographics", (
        XptVariable("USUBJID", "Unique Subject Identifier", "char"),
        XptVariable("SEX", "Sex", "char")), (("nobody", "F"),))
    with pytest.raises(AdamError, match="is not in DM"):
        build_adam(data, blinded=True, sdtm=[dm])


def test_adsl_copies_demographics_from_dm() -> None:
    data = trial("cognitive_impairment")
    code = data.protocol.code
    dm = XptDataset("DM", "Demographics", (
        XptVariable("USUBJID", "Unique Subject Identifier", "char"),
        XptVariable("AGE", "Age", "num"), XptVariable("SEX", "Sex", "char")),
        tuple((f"{code}-{s.subject}", 60 + i, "F" if i % 2 else None)
              for i, s in enumerate(data.subjects)))
    adsl = records(build_adam(data, blinded=True, sdtm=[dm])[0])
    assert [r["AGE"] for r in adsl] == [60 + i for i in range(len(adsl))]
    assert [r["SEX"] for r in adsl] == ["F" if i % 2 else None for i in range(len(adsl))]


@pytest.mark.parametrize("name", LIBRARY)
def test_adam_binary_endpoints_trace_to_responder_records(name: str) -> None:
    """Responder analyses: N and missing by arm, and the responders and proportion per arm the
    result reports, recomputed from the ANL01FL records of the dataset it names."""
    data = trial(name)
    datasets = by_name(build_adam(data, blinded=False))
    result = sap(name)
    code_of = {arm.name.en: arm.code for arm in data.protocol.arms}
    binary = [e for e in data.protocol.endpoints
              if e.analysis.model in ("logistic", "risk_difference", "cmh")]
    if name in ("cognitive_impairment", "type2_diabetes"):  # the libraries with responder endpoints
        assert binary
    for endpoint in binary:
        analysis = result.endpoint(endpoint.id)
        assert analysis.error is None
        rows = records(datasets[str(analysis.source_dataset)])
        assert all(r["ANL01FL"] == "Y" and r["AVAL"] in (0.0, 1.0) for r in rows)
        per_arm: dict[str, list[float]] = defaultdict(list)
        for row in rows:
            per_arm[code_of[str(row["TRTP"])]].append(float(row["AVAL"]))  # type: ignore[arg-type]
        missing = {a: analysis.n_by_arm[a] - len(per_arm[a]) for a in analysis.n_by_arm}
        assert missing == dict(analysis.n_missing_by_arm)
        proportions = (analysis.result or {}).get("arms") or (
            analysis.supportive.get("risk_difference") or {}).get("arms")
        if proportions:
            for arm in proportions:
                values = per_arm[arm["arm"]]
                assert arm["n"] == len(values)
                assert arm["n_events"] == sum(values)
                assert arm["proportion"] == pytest.approx(sum(values) / len(values))
        composite = [r for r in rows if r["DTYPE"] == "COMPOSITE"]
        assert all(r["ICESTRAT"] == "composite" for r in composite)


@pytest.mark.parametrize("name", LIBRARY)
def test_adam_before_the_first_randomization_has_empty_analysis_datasets(name: str) -> None:
    """No participant in any analysis set yet: ADSL lists the screened participants with
    every population flag N; the endpoint datasets exist with no records (no error)."""
    data = trial(name)
    screened = tuple(dataclasses.replace(s, arm=None, randomized_on=None, strata={})
                     for s in data.subjects)
    datasets = build_adam(dataclasses.replace(data, subjects=screened), blinded=False)
    adsl = records(datasets[0])
    assert len(adsl) == len(screened) and {r["FASFL"] for r in adsl} == {"N"}
    assert [d.name for d in datasets[1:]] == [
        n for n in dict.fromkeys(source_dataset(data.protocol, e.id)
                                 for e in data.protocol.endpoints)]
    assert all(not d.rows for d in datasets[1:])


def test_adam_blinded_build_redacts_arm_names_from_protocol_texts() -> None:
    """An endpoint name or field label that names an arm reaches PARAM only when unblinded."""
    from analysis.adam import adam_methods
    from ecrf.model import Label

    data = trial("type2_diabetes")
    arm = data.protocol.arms[0].name.en
    endpoints = tuple(
        dataclasses.replace(e, name=Label(f"{e.name.en} ({arm} vs control)"))
        for e in data.protocol.endpoints)
    named = dataclasses.replace(data, protocol=dataclasses.replace(data.protocol,
                                                                   endpoints=endpoints))
    blinded = build_adam(named, blinded=True)
    texts = {c for d in blinded for r in d.rows for c in r if isinstance(c, str)}
    assert not [t for t in texts if arm in t]
    assert any("[arm]" in t for t in texts)
    assert not [t for t in adam_methods(named, blinded=True).values() if arm in t]
    unblinded = build_adam(named, blinded=False)
    assert any(arm in c for d in unblinded for r in d.rows for c in r if isinstance(c, str))


def test_adsl_actual_treatment_is_null_without_recorded_use_of_the_dtx() -> None:
    """A randomized participant with no day of recorded DTx use: TRT01A/TRT01AN null, as DM's
    ACTARM (before: the planned arm, as if treated), and no conformance finding for it."""
    from analysis.exports.conformance import check_datasets

    data = trial("type2_diabetes")
    first = next(s for s in data.subjects if s.arm is not None)
    data = dataclasses.replace(data, subjects=tuple(
        dataclasses.replace(s, device_days={}) if s is first else s for s in data.subjects))
    adsl = records(build_adam(data, blinded=False)[0])
    row = next(r for r in adsl if r["SUBJID"] == first.subject)
    assert row["TRT01P"] and (row["TRT01A"], row["TRT01AN"]) == (None, None)
    others = [r for r in adsl if r["SUBJID"] != first.subject and r["RANDFL"] == "Y"]
    assert all(r["TRT01A"] == r["TRT01P"] for r in others)
    findings = check_datasets(build_adam(data, blinded=False))
    assert not [f for f in findings if f.variable in ("TRT01A", "TRT01AN")]
