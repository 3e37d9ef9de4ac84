"""Intercurrent events detected from the data and each estimand strategy applied, on data
whose answer is known by construction (worked example E-1 of
/work/shared/reference/estimands-and-missing-data.md §1.5, and exact linear data)."""

from __future__ import annotations

import datetime
import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.datasets import SubjectData, TrialData, endpoint_frame, subject_events
from analysis.intercurrent import inactivity_start, inactivity_start_daily
from analysis.sap import run_sap
from protocols.loader import load_protocol_report, load_protocol_text

D0 = datetime.date(2026, 1, 5)

PROTOCOL = """
code: ICE-01
title: {en: Intercurrent events by construction}
phase: phase_2
therapeutic_area: test
version: "1"
arms:
  - {code: act, name: {en: Active}}
  - {code: pbo, name: {en: Placebo}, is_control: true}
randomization: {method: simple}
schedule:
  visits:
    - {id: screening, label: {en: Screening}, day: -7, forms: [screening]}
    - {id: baseline, label: {en: Baseline}, day: 0, forms: [efficacy]}
    - {id: w4, label: {en: Week 4}, day: 28, forms: [efficacy, treatment]}
    - {id: w8, label: {en: Week 8}, day: 56, forms: [efficacy, treatment]}
    - {id: w12, label: {en: Week 12}, day: 84, forms: [efficacy, treatment]}
forms:
  - id: screening
    title: {en: Screening}
    fields:
      - {id: age, type: integer, label: {en: Age}, min: 18, max: 90}
  - id: efficacy
    title: {en: Efficacy}
    fields:
      - {id: score, type: decimal, label: {en: Score}, min: -100, max: 100, decimals: 1}
  - id: treatment
    title: {en: Treatment}
    fields:
      - {id: stopped, type: yesno, label: {en: Stopped treatment}}
      - {id: stopped_on, type: date, label: {en: Date of last dose}}
  - id: con_meds
    title: {en: Concomitant medication}
    repeating: true
    fields:
      - {id: cm_name, type: text, label: {en: Medication}}
      - {id: cm_rescue, type: yesno, label: {en: Rescue}}
      - {id: cm_start_on, type: date, label: {en: Start}}
device_streams:
  - {id: app, kind: app_usage, label: {en: App minutes}, unit: min, cadence: daily}
intercurrent_events:
  - {id: trtdisc, description: {en: Treatment discontinued}, detected_by: form_field,
     condition: "[stopped] = '1'", date_field: stopped_on}
  - {id: rescue, description: {en: Rescue medication}, detected_by: repeating_form,
     form: con_meds, condition: "[cm_rescue] = '1'", date_field: cm_start_on}
  - {id: death, description: {en: Death}, detected_by: withdrawal, reasons: [death]}
  - {id: inactive, description: {en: No app use for 28 days}, detected_by: device_inactivity,
     stream: app, inactive_days: 28}
endpoints:
  - id: chg
    name: {en: Score}
    role: primary
    estimand:
      population: {en: All}
      analysis_set: fas
      variable: {en: Score}
      intercurrent_events: ESTIMAND
      summary: {en: Difference}
    analysis:
      model: MODEL
      outcome_fields: [score]
      visits: VISITS
      reference_arm: pbo
"""


def protocol(events: str, model: str = "mmrm", visits: str = "[w4, w8, w12]",
             extra: str = ""):  # type: ignore[no-untyped-def]
    text = PROTOCOL.replace("ESTIMAND", events).replace("MODEL", model).replace(
        "VISITS", visits)
    if model == "mmrm":
        text = text.replace("      reference_arm: pbo", "      reference_arm: pbo\n"
                            "      covariance: unstructured")
    return load_protocol_text(text + extra)


def day(n: int) -> datetime.date:
    return D0 + datetime.timedelta(days=n)


def subject(code: str, arm: str, scores: dict[str, float | None], baseline: float = 0.0,
            **kw: object) -> SubjectData:
    """A participant randomized on D0 with scores at w4/w8/w12 (None: missed)."""
    days = {"baseline": 0, "w4": 28, "w8": 56, "w12": 84}
    visits: dict[str, dict[str, object]] = {"screening": {"age": 50},
                                            "baseline": {"score": baseline}}
    dates = {"screening": day(-7), "baseline": D0}
    for visit, value in scores.items():
        if value is not None:
            visits[visit] = {"score": value}
            dates[visit] = day(days[visit])
    for visit, values in dict(kw.pop("extra_visits", {})).items():  # type: ignore[call-overload]
        visits.setdefault(visit, {}).update(values)
        dates.setdefault(visit, day(days[visit]))
    kw.setdefault("status", "randomized")
    return SubjectData(subject=code, site="S1", arm=arm, randomized_on=D0,
                       visits=visits, visit_dates=dates, **kw)  # type: ignore[arg-type]


def stopped(on_day: int, visit: str) -> dict[str, dict[str, object]]:
    return {visit: {"stopped": "1", "stopped_on": day(on_day).isoformat()}}


def e1_subjects() -> tuple[SubjectData, ...]:
    """Worked example E-1 (six participants); TRTDISC, RESCUE and DEATH as recorded data."""
    return (
        subject("P01", "act", {"w4": 2.0, "w8": 3.0, "w12": 4.0}),
        subject("P02", "act", {"w4": 1.0, "w8": 0.5, "w12": 0.0},
                extra_visits=stopped(40, "w8")),
        subject("P03", "act", {"w4": 2.0, "w8": None, "w12": None},
                extra_visits={"w4": {"stopped": "0"}},
                withdrawn_on=day(45), withdrawal_reason="withdrew consent",
                repeats={"con_meds": ({"cm_name": "x", "cm_rescue": "0",
                                       "cm_start_on": day(10).isoformat()},)},
                status="withdrawn"),
        subject("P04", "pbo", {"w4": 0.0, "w8": -1.0, "w12": 2.0},
                repeats={"con_meds": ({"cm_name": "r", "cm_rescue": "1",
                                       "cm_start_on": day(60).isoformat()},)}),
        subject("P05", "pbo", {"w4": -1.0, "w8": -2.0, "w12": None},
                withdrawn_on=day(70), withdrawal_reason="Death", status="withdrawn"),
        subject("P06", "pbo", {"w4": 0.5, "w8": None, "w12": 1.0}),
    )


def data_of(p, subjects) -> TrialData:  # type: ignore[no-untyped-def]
    return TrialData(protocol=p, subjects=tuple(subjects))


def cells(frame, column: str = "value") -> dict[tuple[str, str], float | None]:  # type: ignore[no-untyped-def]
    return {
        (r.subject, r.visit): (None if r[column] != r[column] else float(r[column]))
        for _, r in frame.iterrows()
    }


# ------------------------------------------------------------------ detection


def test_each_detection_kind_finds_the_event_and_its_date() -> None:
    p = protocol("[]")
    # P03 (withdrawn day 45) stops using the app after day 9: 28 idle days fit before day 45
    usage = {day(d): (10.0 if d < 10 else 0.0) for d in range(0, 90)}
    subjects = list(e1_subjects())
    subjects[2] = replace(subjects[2], device_days={"app": usage})
    data = data_of(p, subjects)
    found = {s.subject: {k: o.on for k, o in subject_events(data, s).items()} for s in subjects}
    assert found["P01"] == {"inactive": D0}  # never used the app: stopped at randomization
    assert found["P02"]["trtdisc"] == day(40)
    assert found["P03"] == {"inactive": day(9)}  # withdrawal "consent" is not "death"
    late = replace(subjects[2], device_days={"app": {day(d): 1.0 for d in range(20)}})
    assert subject_events(data, late) == {}  # idle from day 20: withdrawn before 28 days
    assert found["P04"]["rescue"] == day(60)
    assert found["P05"]["death"] == day(70)
    assert "trtdisc" not in found["P06"]


def test_inactivity_needs_the_whole_run_inside_the_window() -> None:
    used = {day(d): 5.0 for d in range(0, 10)}
    assert inactivity_start(used, D0, day(30), 28) is None  # days 10..30: only 21 idle days
    assert inactivity_start(used, D0, day(37), 28) == day(9)
    assert inactivity_start({}, D0, day(27), 28) == D0


def test_events_after_the_cutoff_are_not_seen() -> None:
    p = protocol("[]")
    data = replace(data_of(p, e1_subjects()), cutoff_on=day(58))
    assert "rescue" not in subject_events(data, data.subjects[3])
    assert "trtdisc" in subject_events(data, data.subjects[1])


# ------------------------------------------------------------------ strategies (E-1)

ESTIMAND_A = ("[{event: trtdisc, strategy: treatment_policy}, "
              "{event: rescue, strategy: treatment_policy}, "
              "{event: death, strategy: composite, composite_value: -10}]")
ESTIMAND_B = ("[{event: trtdisc, strategy: hypothetical}, "
              "{event: rescue, strategy: hypothetical}, "
              "{event: death, strategy: composite, composite_value: -10}]")


def test_treatment_policy_keeps_post_event_data_and_composite_fixes_the_value() -> None:
    frame = endpoint_frame(data_of(protocol(ESTIMAND_A), e1_subjects()), protocol(
        ESTIMAND_A).endpoint("chg"))
    got = cells(frame)
    assert got[("P02", "w8")] == 0.5 and got[("P02", "w12")] == 0.0  # observed, off treatment
    assert got[("P04", "w12")] == 2.0  # after rescue, used as is
    assert got[("P03", "w8")] is None  # missing: left to the model (MAR)
    assert got[("P05", "w8")] == -2.0 and got[("P05", "w12")] == -10.0  # death: composite
    assert got[("P06", "w8")] is None
    assert frame.loc[frame["subject"] == "P05", "ice_action"].tolist() == [
        None, None, "composite"]
    assert frame.loc[frame["subject"] == "P02", "ice_trtdisc"].iloc[0] == "2026-02-14"


def test_hypothetical_sets_post_event_values_missing() -> None:
    p = protocol(ESTIMAND_B)
    got = cells(endpoint_frame(data_of(p, e1_subjects()), p.endpoint("chg")))
    assert got[("P02", "w4")] == 1.0  # before discontinuation (day 28 < 40)
    assert got[("P02", "w8")] is None and got[("P02", "w12")] is None
    assert got[("P04", "w8")] == -1.0 and got[("P04", "w12")] is None  # rescue day 60
    assert got[("P05", "w12")] == -10.0  # composite outranks everything


def test_an_assessment_on_the_event_day_is_before_it() -> None:
    p = protocol("[{event: trtdisc, strategy: hypothetical}]")
    person = subject("P", "act", {"w4": 1.0, "w8": 2.0, "w12": 3.0},
                     extra_visits=stopped(56, "w8"))
    got = cells(endpoint_frame(data_of(p, [person, subject("Q", "pbo", {"w4": 0.0})]),
                               p.endpoint("chg")))
    assert got[("P", "w8")] == 2.0 and got[("P", "w12")] is None


def test_while_on_treatment_truncates_longitudinal_data_and_carries_the_last_value() -> None:
    events = "[{event: trtdisc, strategy: while_on_treatment}]"
    mmrm = protocol(events)
    frame = endpoint_frame(data_of(mmrm, e1_subjects()), mmrm.endpoint("chg"))
    assert set(frame.loc[frame["subject"] == "P02", "visit"]) == {"w4"}  # truncated at day 40
    ancova = protocol(events, model="ancova", visits="[w12]")
    got = cells(endpoint_frame(data_of(ancova, e1_subjects()), ancova.endpoint("chg")))
    assert got[("P02", "w12")] == 1.0  # its last on-treatment value (week 4)
    assert got[("P01", "w12")] == 4.0


def test_composite_responder_counts_withdrawal_as_non_response() -> None:
    events = "[{event: death, strategy: composite, composite_value: 0}]"
    p = load_protocol_text(
        PROTOCOL.replace("ESTIMAND", events).replace("MODEL", "risk_difference")
        .replace("VISITS", "[w12]").replace("      reference_arm: pbo",
                                            "      reference_arm: pbo\n"
                                            "      responder_if: \"[score] >= 2\"")
    )
    frame = endpoint_frame(data_of(p, e1_subjects()), p.endpoint("chg"))
    got = cells(frame, "response")
    assert got[("P05", "w12")] == 0.0  # died (no week-12 value): non-responder by definition
    assert got[("P03", "w12")] is None  # withdrew consent: a missing value, not a failure
    assert got[("P01", "w12")] == 1.0 and got[("P04", "w12")] == 1.0


def test_survival_strategies_follow_the_e1_table() -> None:
    """T2 of the time-to-event table: discontinuation day 50, event day 120, last contact 200."""
    base = PROTOCOL.replace("MODEL", "cox").replace("VISITS", "[w4, w8, w12]").replace(
        "      reference_arm: pbo", "      reference_arm: pbo\n      event_if: \"[bad] = '1'\"\n"
        "      event_date_field: bad_on")
    base = base.replace("      - {id: stopped_on, type: date, label: {en: Date of last dose}}",
                        "      - {id: stopped_on, type: date, label: {en: Date of last dose}}\n"
                        "      - {id: bad, type: yesno, label: {en: Worsened}}\n"
                        "      - {id: bad_on, type: date, label: {en: Worsening date}}")

    def frame_for(strategy: str):  # type: ignore[no-untyped-def]
        p = load_protocol_text(base.replace(
            "ESTIMAND", f"[{{event: trtdisc, strategy: {strategy}}}]"))
        t2 = subject("T2", "act", {"w4": 1.0, "w8": 1.0, "w12": 1.0},
                     extra_visits={"w8": {"stopped": "1", "stopped_on": day(50).isoformat()},
                                   "w12": {"bad": "1", "bad_on": day(120).isoformat()}})
        return endpoint_frame(data_of(p, [t2, subject("C", "pbo", {"w4": 0.0})]),
                              p.endpoint("chg")).set_index("subject")

    assert frame_for("treatment_policy").loc["T2", ["time", "event"]].tolist() == [120, 1]
    assert frame_for("hypothetical").loc["T2", ["time", "event"]].tolist() == [50, 0]
    assert frame_for("composite").loc["T2", ["time", "event"]].tolist() == [50, 1]
    assert frame_for("while_on_treatment").loc["T2", ["time", "event"]].tolist() == [50, 0]


# ------------------------------------------------------------------ estimates known exactly


def _linear_trial(estimand: str, model: str = "ancova"):  # type: ignore[no-untyped-def]
    """Ten participants per arm; week-12 score = 2 on active, 0 on placebo, +-1 in pairs so
    the means are exact; the same baselines 0..9 in both arms (the ANCOVA estimate is then the
    difference in means). Four per arm start rescue on day 60 and then score 50."""
    p = protocol(estimand, model=model, visits="[w12]" if model != "mmrm" else "[w4, w12]")
    people = []
    for arm, mean in (("act", 2.0), ("pbo", 0.0)):
        for k in range(10):
            score = mean + (1.0 if k % 2 else -1.0)
            rescued = k < 4
            people.append(subject(
                f"{arm}{k}", arm, {"w4": score, "w12": 50.0 if rescued else score},
                baseline=float(k),
                repeats={"con_meds": ({"cm_name": "r", "cm_rescue": "1",
                                       "cm_start_on": day(60).isoformat()},)} if rescued else {},
            ))
    return data_of(p, people)


def test_hypothetical_estimate_equals_the_effect_without_rescue() -> None:
    data = _linear_trial("[{event: rescue, strategy: hypothetical}]")
    results = run_sap(data, blinded=False, seed=1)
    endpoint = results.endpoint("chg")
    assert endpoint.headline is not None
    assert endpoint.headline["estimate"] == pytest.approx(2.0, abs=1e-9)
    ice = endpoint.intercurrent[0]
    assert ice["n_with_event"] == {"act": 4, "pbo": 4}
    assert ice["n_affected"] == {"act": 4, "pbo": 4}
    assert ice["records_changed"] == {"set_missing": 8}
    assert endpoint.missing_data is not None
    assert endpoint.missing_data["after_hypothetical_event"] == {"act": 4, "pbo": 4}
    assert results.disposition["arms"]["act"]["intercurrent_events"]["rescue"] == 4


def test_treatment_policy_estimate_uses_post_rescue_values() -> None:
    results = run_sap(_linear_trial("[{event: rescue, strategy: treatment_policy}]"),
                      blinded=False, seed=1)
    endpoint = results.endpoint("chg")
    assert endpoint.headline is not None
    # rescued participants (k = 0..3: scores -1, +1, -1, +1 around the mean) score 50 in
    # both arms: means are (4*50 + 6*mean_rest) / 10 per arm; difference = 0.6 * 2 = 1.2
    assert endpoint.headline["estimate"] == pytest.approx(1.2, abs=1e-9)
    assert endpoint.intercurrent[0]["n_affected"] == {"act": 0, "pbo": 0}


def test_composite_estimate_uses_the_stated_value() -> None:
    results = run_sap(_linear_trial(
        "[{event: rescue, strategy: composite, composite_value: -20}]"), blinded=False, seed=1)
    endpoint = results.endpoint("chg")
    assert endpoint.headline is not None
    assert endpoint.headline["estimate"] == pytest.approx(0.6 * 2.0, abs=1e-9)
    assert endpoint.intercurrent[0]["records_changed"] == {"composite": 8}


def test_while_on_treatment_estimate_uses_the_last_on_treatment_value() -> None:
    results = run_sap(_linear_trial("[{event: rescue, strategy: while_on_treatment}]"),
                      blinded=False, seed=1)
    endpoint = results.endpoint("chg")
    assert endpoint.headline is not None
    assert endpoint.headline["estimate"] == pytest.approx(2.0, abs=1e-9)  # week-4 values
    assert endpoint.intercurrent[0]["records_changed"] == {"last_on_treatment": 8}


# ------------------------------------------------------------------ validation


def _errors(text: str) -> list[str]:
    return [f"{i.line}: {i.path}: {i.message}" for i in load_protocol_report(text).errors]


def _text(events: str) -> str:
    return PROTOCOL.replace("ESTIMAND", events).replace("MODEL", "ancova").replace(
        "VISITS", "[w12]")


def test_principal_stratum_is_refused_with_the_reason() -> None:
    errors = _errors(_text("[{event: trtdisc, strategy: principal_stratum}]"))
    assert len(errors) == 1 and "principal_stratum needs a causal estimation method" in errors[0]


def test_unknown_event_and_bad_strategy_are_refused_with_lines() -> None:
    text = _text("[{event: trtdiscc, strategy: hypothetical}]")
    errors = _errors(text)
    line = text.splitlines().index(next(x for x in text.splitlines() if "trtdiscc" in x)) + 1
    assert errors == [f"{line}: endpoints[0].estimand.intercurrent_events[0].event: unknown "
                      "intercurrent event 'trtdiscc' (declare it under the top-level "
                      "intercurrent_events with how it is detected) (did you mean 'trtdisc'?)"]
    errors = _errors(_text("[{event: trtdisc, strategy: hypothetically}]"))
    assert len(errors) == 1 and "hypothetically" in errors[0]
    errors = _errors(_text("[{event: trtdisc, strategy: composite}]"))
    assert errors and "composite needs composite_value" in errors[0]


def test_detection_rules_name_real_fields_forms_and_streams() -> None:
    text = _text("[]")
    bad = {
        "date_field: stopped_on}": "date_field: stoped_on}",
        "form: con_meds,": "form: treatment,",
        "stream: app,": "stream: apps,",
        'condition: "[stopped] = \'1\'"': 'condition: "[stoped] = \'1\'"',
    }
    for old, new in bad.items():
        assert old in text, old
        errors = _errors(text.replace(old, new))
        assert len(errors) == 1, (new, errors)
    messages = " | ".join(_errors(text.replace("date_field: cm_start_on}", "date_field: age}")))
    assert "field 'age' is not in form 'con_meds'" in messages
    messages = " | ".join(_errors(text.replace("date_field: stopped_on}", "date_field: age}")))
    assert "field 'age' is a integer field, not a date" in messages
    messages = " | ".join(_errors(text.replace("inactive_days: 28}", "reasons: [x]}")))
    assert "reasons is not used by detected_by: device_inactivity" in messages
    assert "detected_by: device_inactivity needs inactive_days" in messages


def test_the_old_estimand_shape_is_refused_with_what_to_write() -> None:
    errors = _errors(_text("[{id: trtdisc, description: {en: x}, strategy: hypothetical}]"))
    joined = " | ".join(errors)
    assert "intercurrent events are now declared once under the top-level " \
        "'intercurrent_events'" in joined
    assert "here write '- {event: <id>, strategy: <strategy>}'" in joined


_DAY_VALUES = st.sampled_from([0.0, 0.0, 0.5, 3.0, 30.0, -1.0, math.nan])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.integers(-10, 80), _DAY_VALUES, max_size=60),
    st.integers(-5, 5),
    st.integers(-3, 90),
    st.integers(-1, 12),
)
def test_inactivity_start_reads_the_days_of_use_as_the_daily_walk_does(
    used: dict[int, float], start: int, end: int, length: int
) -> None:
    days = {D0 + datetime.timedelta(days=k): v for k, v in used.items()}
    first, last = D0 + datetime.timedelta(days=start), D0 + datetime.timedelta(days=end)
    assert inactivity_start(days, first, last, length) == inactivity_start_daily(
        days, first, last, length)


def test_a_missing_baseline_is_missing_never_a_later_visits_value() -> None:
    """Baseline (ICH E9: before treatment) comes from the pre-treatment visits only: a
    participant whose baseline score was not done has no baseline, no change and no baseline
    characteristic, in the analysis frame, Table 14.1's values and the BDS dataset's baseline
    record alike (before, the week-4 value stood in for the baseline: a change of 0)."""
    from analysis.adam.bds import baseline_visit
    from analysis.datasets import baseline_values

    p = protocol(ESTIMAND_A)
    endpoint = p.endpoint("chg")
    no_baseline = subject("P07", "act", {"w4": 3.0, "w8": 4.0, "w12": 5.0},
                          extra_visits={"baseline": {"score": {"missing": "not_done"}}})
    assert no_baseline.visits["baseline"] == {"score": {"missing": "not_done"}}
    data = data_of(p, [*e1_subjects(), no_baseline])
    frame = endpoint_frame(data, endpoint)
    rows = frame[frame["subject"] == "P07"]
    assert rows["value"].tolist() == [3.0, 4.0, 5.0]
    assert rows["baseline"].isna().all() and rows["change"].isna().all()
    assert "score" not in baseline_values(data, no_baseline)
    assert baseline_values(data, no_baseline)["age"] == 50  # screening, before treatment
    assert baseline_visit(data, no_baseline, endpoint, "score") is None
    with_baseline = e1_subjects()[0]
    assert baseline_visit(data, with_baseline, endpoint, "score") == "baseline"
    assert cells(frame, "baseline")[("P01", "w12")] == 0.0


def test_received_the_dtx_is_counted_from_recorded_use_or_said_not_recorded() -> None:
    """RPT-03/CON-05: "received the allocated DTx" is a day of recorded use on a DTx-use
    stream from treatment start to the cut-off (before, every randomized participant, and no
    one "not received"); with no such stream in the protocol it is not recorded, in the
    results, the disposition table and the CONSORT boxes, never assumed."""
    from analysis.report.consort import _arm_sections, validate_consort
    from analysis.report.spec import ConsortArm, ConsortData

    data = _linear_trial("[{event: rescue, strategy: treatment_policy}]")
    people = list(data.subjects)
    for k, s in enumerate(people):
        days = {day(-3): 20.0, day(5): 0.0}  # before treatment: not use of the allocated DTx
        if k % 3 == 0:
            days[day(9)] = 12.5
        if k % 3 == 1:
            days[day(400)] = 30.0  # after the cut-off: not seen
        people[k] = replace(s, device_days={"app": days})
    data = replace(data, subjects=tuple(people), cutoff_on=day(120))
    arms = run_sap(data, blinded=False, seed=1).disposition["arms"]
    for arm in ("act", "pbo"):
        mine = [k for k, s in enumerate(people) if s.arm == arm]
        assert arms[arm]["received"] == sum(1 for k in mine if k % 3 == 0) > 0
        assert arms[arm]["received"] + arms[arm]["not_received"] == arms[arm]["allocated"]
        assert arms[arm]["not_received"] > 0

    no_use = replace(data.protocol, device_streams=tuple(
        replace(stream, kind="step_count") for stream in data.protocol.device_streams))
    arms = run_sap(replace(data, protocol=no_use), blinded=False, seed=1).disposition["arms"]
    assert arms["act"]["received"] is None and arms["act"]["not_received"] is None
    unknown = ConsortArm(label="Active", n_allocated=8, n_received=None, n_not_received=None,
                         n_analysed=8)
    validate_consort(ConsortData(n_assessed=8, n_excluded=0, excluded_reasons={},
                                 n_randomized=8, arms=(unknown,)))
    allocation = _arm_sections(unknown)[0]
    assert "Receipt of the allocated intervention: not recorded" in allocation
    assert not any("Received allocated" in line for line in allocation)
