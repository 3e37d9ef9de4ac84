"""Analysis datasets: one tidy table per endpoint, built from captured data, per population.

Input is plain data (`TrialData`, filled by the application from its database, or by a
statistician from their own files); output is a pandas DataFrame with one row per subject (or
per subject x visit for MMRM, per subject x eye for per-eye GEE) and the columns

``subject, site, arm, <strata factors>, <covariates>, visit, value, baseline, change``

plus ``response`` (binary models) or ``time, event`` (time-to-event models) and ``eye``.
Values recorded after the data cut-off are ignored.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from analysis.results import AnalysisError
from ecrf.expressions import ExpressionError, evaluate, truthy
from protocols.model import BINARY_MODELS, SURVIVAL_MODELS, Endpoint, Protocol, StratumLevel

POPULATIONS = ("itt", "fas", "per_protocol", "safety", "completers")
Values = Mapping[str, object]


@dataclass(frozen=True)
class SubjectData:
    """Everything captured about one screened subject (pseudonymous)."""

    subject: str
    site: str
    status: str
    arm: str | None = None  # arm code as randomized (None: never randomized)
    randomized_on: datetime.date | None = None
    withdrawn_on: datetime.date | None = None
    withdrawal_reason: str | None = None
    strata: Mapping[str, str] = field(default_factory=dict)  # factor levels as used, + site
    visits: Mapping[str, Values] = field(default_factory=dict)  # visit -> submitted values
    visit_dates: Mapping[str, datetime.date] = field(default_factory=dict)
    repeats: Mapping[str, tuple[Values, ...]] = field(default_factory=dict)  # AE, con-meds
    adherent: bool | None = None  # the protocol's adherence rule, None when not assessed
    failed_criteria: tuple[str, ...] = ()
    deviations: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrialData:
    protocol: Protocol
    subjects: tuple[SubjectData, ...]
    cutoff_on: datetime.date | None = None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None or isinstance(value, dict):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def visible_visits(data: TrialData, subject: SubjectData) -> dict[str, Values]:
    """The subject's visits on or before the cut-off (visits without a date are kept)."""
    if data.cutoff_on is None:
        return dict(subject.visits)
    return {
        v: values
        for v, values in subject.visits.items()
        if subject.visit_dates.get(v) is None or subject.visit_dates[v] <= data.cutoff_on
    }


def baseline_values(data: TrialData, subject: SubjectData) -> dict[str, object]:
    """Values known before treatment: visits anchored before randomization, then the rest
    in schedule order for fields not seen yet (first non-blank value wins)."""
    visits = visible_visits(data, subject)
    order = [
        v.id for v in data.protocol.schedule.visits if v.anchor != "randomization" or v.day <= 0
    ]
    merged: dict[str, object] = {}
    for visit in order + [v for v in visits if v not in order]:
        for key, value in visits.get(visit, {}).items():
            if key not in merged and value not in (None, "", []) and not isinstance(value, dict):
                merged[key] = value
    return merged


def classify(
    levels: Sequence[StratumLevel], values: Values, visits: Mapping[str, Values] | None = None
) -> str | None:
    """Return the first level whose rule holds (or the `otherwise` level)."""
    for level in levels:
        try:
            if level.is_otherwise or truthy(evaluate(level.when or "", values, visits=visits)):
                return level.code
        except ExpressionError:
            return None
    return None


def in_population(
    data: TrialData, subject: SubjectData, population: str, endpoint: Endpoint | None = None
) -> bool:
    """Whether a subject belongs to an analysis set (ICH E9 §5.2)."""
    if population not in POPULATIONS:
        raise AnalysisError(f"unknown population {population!r}")
    if subject.arm is None:
        return False
    if population in ("itt", "fas", "safety"):
        return True
    if population == "per_protocol":
        return (
            subject.adherent is not False
            and not subject.deviations
            and (subject.withdrawn_on is None)
        )
    visits = endpoint.analysis.visits if endpoint else ()
    seen = visible_visits(data, subject)
    return all(v in seen for v in visits)


def _covariate_columns(endpoint: Endpoint) -> list[str]:
    return list(endpoint.analysis.covariates)


def _strata_columns(endpoint: Endpoint) -> list[str]:
    return list(endpoint.analysis.strata)


def _subject_row(data: TrialData, subject: SubjectData, endpoint: Endpoint) -> dict[str, object]:
    base = baseline_values(data, subject)
    row: dict[str, object] = {"subject": subject.subject, "site": subject.site, "arm": subject.arm}
    for factor in _strata_columns(endpoint):
        row[factor] = subject.site if factor == "site" else subject.strata.get(factor)
    for covariate in _covariate_columns(endpoint):
        row[covariate] = _number(base.get(covariate))
    for subgroup in endpoint.analysis.subgroups:
        row[f"subgroup_{subgroup.id}"] = classify(subgroup.levels, base)
    return row


def _baseline(
    data: TrialData, subject: SubjectData, endpoint: Endpoint, field_id: str
) -> float | None:
    spec = endpoint.analysis
    visits = visible_visits(data, subject)
    if spec.baseline_visit:
        return _number(visits.get(spec.baseline_visit, {}).get(spec.baseline_field or field_id))
    return _number(baseline_values(data, subject).get(spec.baseline_field or field_id))


def endpoint_frame(
    data: TrialData,
    endpoint: Endpoint,
    population: str | None = None,
) -> pd.DataFrame:
    """Return the analysis dataset of one endpoint (see the module docstring for columns)."""
    spec = endpoint.analysis
    population = population or endpoint.estimand.analysis_set
    subjects = [s for s in data.subjects if in_population(data, s, population, endpoint)]
    rows: list[dict[str, object]] = []
    for subject in subjects:
        common = _subject_row(data, subject, endpoint)
        visits = visible_visits(data, subject)
        if spec.model in SURVIVAL_MODELS:
            rows.append({**common, **_time_to_event(data, subject, endpoint, visits)})
            continue
        fields = spec.outcome_fields if spec.model == "gee_per_eye" else spec.outcome_fields[:1]
        eyes = ("right", "left") if spec.model == "gee_per_eye" else (None,)
        analysis_visits = spec.visits if spec.model == "mmrm" else spec.visits[-1:]
        for visit in analysis_visits:
            values = visits.get(visit, {})
            for eye, field_id in zip(eyes, fields, strict=False):
                value = _number(values.get(field_id))
                baseline = _baseline(data, subject, endpoint, field_id)
                row = {
                    **common,
                    "visit": visit,
                    "value": value,
                    "baseline": baseline,
                    "change": (value - baseline)
                    if value is not None and baseline is not None
                    else None,
                }
                if eye is not None:
                    row["eye"] = eye
                if spec.model in BINARY_MODELS:
                    row["response"] = _response(endpoint, field_id, values, visits)
                rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise AnalysisError(f"{endpoint.id}: no subjects in population {population}")
    for column in ("value", "baseline", "change", "response", "time", "event"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def _response(
    endpoint: Endpoint, field_id: str, values: Values, visits: Mapping[str, Values]
) -> float | None:
    """1 for a responder, 0 for a non-responder, None when the outcome is missing."""
    if not values or values.get(field_id) in (None, "") or isinstance(values.get(field_id), dict):
        return None
    rule = endpoint.analysis.responder_if
    if rule is None:
        return 1.0 if str(values.get(field_id)) == "1" else 0.0
    result = evaluate(rule, values, visits=visits)
    return None if result is None else (1.0 if truthy(result) else 0.0)


def _time_to_event(
    data: TrialData, subject: SubjectData, endpoint: Endpoint, visits: Mapping[str, Values]
) -> dict[str, object]:
    spec = endpoint.analysis
    start = subject.randomized_on
    if start is None:
        return {"time": None, "event": None}
    for visit in [v.id for v in data.protocol.schedule.visits] + list(visits):
        values = visits.get(visit, {})
        if values and spec.event_if and truthy(evaluate(spec.event_if, values, visits=visits)):
            when = values.get(spec.event_date_field or "")
            event_on = (
                datetime.date.fromisoformat(when)
                if isinstance(when, str)
                else subject.visit_dates.get(visit)
            )
            if event_on is not None and (data.cutoff_on is None or event_on <= data.cutoff_on):
                return {"time": float(max((event_on - start).days, 0)), "event": 1.0}
    dates = [d for v, d in subject.visit_dates.items() if v in visits]
    end = max(dates) if dates else start
    if subject.withdrawn_on is not None:
        end = min(end, subject.withdrawn_on) if dates else subject.withdrawn_on
    if data.cutoff_on is not None:
        end = min(end, data.cutoff_on)
    return {"time": float(max((end - start).days, 0)), "event": 0.0}
