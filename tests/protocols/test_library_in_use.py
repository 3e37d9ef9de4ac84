"""The library protocols drive the eCRF engine: scoring, branching and eligibility work."""

from __future__ import annotations

import datetime

from ecrf.checks import evaluate_eligibility, evaluate_form
from ecrf.expressions import evaluate, truthy
from protocols.loader import library_protocol_paths, load_protocol
from protocols.model import Protocol, StratificationFactor

TODAY = datetime.date(2026, 3, 1)
LIBRARY = library_protocol_paths()


def level_of(factor: StratificationFactor, values: dict[str, object]) -> str:
    """Return the first level whose rule holds (the otherwise level always does)."""
    for level in factor.levels:
        if level.is_otherwise or (level.when and truthy(evaluate(level.when, values))):
            return level.code
    raise AssertionError(f"no level of {factor.id} for {values}")


def load(name: str) -> Protocol:
    return load_protocol(LIBRARY[name])


def test_mci_scoring_eligibility_and_stratum() -> None:
    protocol = load("cognitive_impairment")
    moca = evaluate_form(protocol.form("moca"), {"moca_raw": 21, "moca_edu_point": "1"},
                         today=TODAY, submit=True)
    assert moca.derived == {"moca_total": 22}
    adas_items = {f"adas_q{k:02d}": 1 for k in range(1, 14)}
    adas = evaluate_form(protocol.form("adas_cog"), adas_items, today=TODAY, submit=True)
    assert adas.derived == {"adas_total": 13}
    screening = {"age": 72, "study_partner": "1", "has_device": "1", "dementia_dx": "0",
                 "gds_total": 4, **moca.values}
    assert evaluate_eligibility(protocol.eligibility, screening, today=TODAY).is_eligible
    too_old = evaluate_eligibility(protocol.eligibility, {**screening, "age": 88}, today=TODAY)
    assert [c.id for c in too_old.failed] == ["inc_age"]
    assert level_of(protocol.randomization.factor("moca_band"), screening) == "moca_22_25"


def test_myopia_per_eye_mean_and_minimization_levels() -> None:
    protocol = load("pediatric_myopia")
    refraction = evaluate_form(protocol.form("refraction"),
                               {"cyclo_done": "1", "se_right": -2.25, "se_left": -3.5},
                               today=TODAY, submit=True)
    assert refraction.derived == {"se_mean": -2.88}
    values = {"age_years": 9, "guardian_phone": "1", "prior_myopia_control": "0",
              "ocular_disease": "0", **refraction.values}
    assert evaluate_eligibility(protocol.eligibility, values, today=TODAY).is_eligible
    levels = {f.id: level_of(f, values) for f in protocol.randomization.factors}
    assert levels == {"age_group": "age_9_12", "se_band": "low"}
    hidden = evaluate_form(protocol.form("refraction"), {"cyclo_done": "0"}, today=TODAY,
                           submit=False)
    assert set(hidden.hidden) == {"se_right", "se_left"}


def test_diabetes_bmi_responder_and_rescue_rules() -> None:
    protocol = load("type2_diabetes")
    vitals = evaluate_form(protocol.form("vitals"),
                           {"weight_kg": 80.0, "height_cm": 170.0, "sbp": 130, "dbp": 85},
                           today=TODAY, submit=True)
    assert vitals.derived == {"bmi": 27.7}
    responder = protocol.endpoint("hba1c_target_or").analysis.responder_if or ""
    week_24 = {"week_24": {"rescue_started": "0"}}
    assert truthy(evaluate(responder, {"hba1c_pct": 6.8}, visits=week_24))
    rescued = {"week_24": {"rescue_started": "1"}}
    assert not truthy(evaluate(responder, {"hba1c_pct": 6.8}, visits=rescued))
    event = protocol.endpoint("time_to_rescue_cox").analysis.event_if or ""
    assert truthy(evaluate(event, {"rescue_started": "1"}))
    screening = {"age": 55, "sex": "1", "hba1c_scr": 8.6, "egfr": 75, "metformin_stable": "1",
                 "insulin_use": "0", "smartphone": "1", "pregnant": "0"}
    assert evaluate_eligibility(protocol.eligibility, screening, today=TODAY).is_eligible
    assert level_of(protocol.randomization.factor("hba1c_band"), screening) == "ge_8_5"
