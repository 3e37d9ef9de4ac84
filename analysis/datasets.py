"""Analysis datasets: one tidy table per endpoint, built from captured data, per population.

Input is plain data (`TrialData`, filled by the application from its database, or by a
statistician from their own files); output is a pandas DataFrame with one row per subject (or
per subject x visit for MMRM, per subject x eye for per-eye GEE) and the columns

``subject, site, arm, <strata factors>, <covariates>, visit, value, baseline, change``

plus ``response`` (binary models) or ``time, event`` (time-to-event models) and ``eye``.
Values recorded after the data cut-off are ignored.

The estimand's intercurrent-event strategies are applied here (`analysis.intercurrent`): every
row carries ``ice_<event id>`` (the participant's event date, ISO, or None) for each event the
estimand names, and ``ice_event``, ``ice_strategy``, ``ice_action`` saying which event changed
that row and how (``set_missing``, ``composite``, ``last_on_treatment``, ``truncated``,
``censored``, ``event_at_ice``; None: used as observed).
"""

from __future__ import annotations

import datetime
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pandas as pd

from analysis.intercurrent import (
    PRECEDENCE,
    Evaluators,
    EventOccurrence,
    detect_events,
    evaluator,
    governing_event,
)
from analysis.results import AnalysisError
from ecrf.expressions import ExpressionError, MemoEvaluator, truthy
from protocols.model import (
    BINARY_MODELS,
    SURVIVAL_MODELS,
    USE_STREAM_KINDS,
    Endpoint,
    Protocol,
    StratumLevel,
)

_T = TypeVar("_T")
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
    # daily totals of each device stream (site-local days), for device_inactivity events
    device_days: Mapping[str, Mapping[datetime.date, float]] = field(default_factory=dict)


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


def _memo(data: TrialData, name: str, owners: tuple[object, ...]) -> tuple[dict[Any, Any], Any]:
    """Return (the data set's memo ``name``, the key of ``owners``) for per-subject results.

    Data sets and subjects are immutable, and every endpoint, population and sensitivity
    analysis asks again for the same subject's derived values. The memo lives on the data set
    (not a field: eq and repr unchanged) and keys by object identity; each entry keeps its
    owners alive, so an id is never reused while its entry exists."""
    memo: dict[Any, Any] | None = data.__dict__.get(name)
    if memo is None:
        memo = {}
        object.__setattr__(data, name, memo)
    return memo, tuple(map(id, owners))


def _recall(memo: Mapping[Any, Any], key: Any, owners: tuple[object, ...]) -> Any:
    hit = memo.get(key)
    if hit is None:
        return None
    held = hit[0]
    if len(held) == len(owners) and all(map(operator.is_, held, owners)):
        return hit[1]
    return None


def _per_subject(
    data: TrialData, name: str, subject: SubjectData,
    compute: Callable[[TrialData, SubjectData], _T],
) -> _T:
    """Return ``compute(data, subject)`` memoised on the data set by subject identity, shared
    and never modified: the module's own readers take it as is (the public functions copy)."""
    memo: dict[int, tuple[SubjectData, _T]] | None = data.__dict__.get(name)
    if memo is None:
        memo = {}
        object.__setattr__(data, name, memo)  # not a field: eq and repr unchanged
    hit = memo.get(id(subject))
    if hit is not None and hit[0] is subject:  # the memo holds the subject: ids never reused
        return hit[1]
    value = compute(data, subject)
    memo[id(subject)] = (subject, value)
    return value


def _visits_view(data: TrialData, subject: SubjectData) -> dict[str, Values]:
    return _per_subject(data, "_visits_cache", subject, visible_visits)


def _baseline_view(data: TrialData, subject: SubjectData) -> dict[str, object]:
    return _per_subject(data, "_baseline_cache", subject, _baseline_values)


def _events_view(data: TrialData, subject: SubjectData) -> dict[str, EventOccurrence]:
    return _per_subject(data, "_events_cache", subject, _detect_subject_events)


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
    """Values known before treatment: the pre-treatment visits' (`pre_treatment_visits`), in
    schedule order, the first non-blank value of each field winning. A field without one has
    no baseline value: never a value collected after randomization. Memoised."""
    return dict(_baseline_view(data, subject))


def pre_treatment_visits(protocol: Protocol) -> list[str]:
    """The schedule's visits before treatment, in schedule order: those not anchored at
    randomization, and those anchored at it on day 0 or before."""
    return [v.id for v in protocol.schedule.visits if v.anchor != "randomization" or v.day <= 0]


def _baseline_values(data: TrialData, subject: SubjectData) -> dict[str, object]:
    visits = _visits_view(data, subject)
    merged: dict[str, object] = {}
    for visit in pre_treatment_visits(data.protocol):
        for key, value in visits.get(visit, {}).items():
            if key not in merged and value not in (None, "", []) and not isinstance(value, dict):
                merged[key] = value
    return merged


def _evaluators(data: TrialData) -> Evaluators:
    """The data set's expression evaluators by text (`MemoEvaluator`: each protocol rule is
    evaluated once per distinct input over all subjects and visits; not a field)."""
    found: Evaluators | None = data.__dict__.get("_evaluators")
    if found is None:
        found = {}
        object.__setattr__(data, "_evaluators", found)
    return found


def _rule(data: TrialData, text: str) -> MemoEvaluator:
    return evaluator(_evaluators(data), text)


def classify(
    levels: Sequence[StratumLevel], values: Values, visits: Mapping[str, Values] | None = None,
    evaluators: Evaluators | None = None,
) -> str | None:
    """Return the first level whose rule holds (or the `otherwise` level)."""
    for level in levels:
        try:
            if level.is_otherwise or truthy(
                evaluator({} if evaluators is None else evaluators, level.when or "")(
                    values, visits)
            ):
                return level.code
        except ExpressionError:
            return None
    return None


def subject_events(data: TrialData, subject: SubjectData) -> dict[str, EventOccurrence]:
    """Return the subject's intercurrent events found in the data visible at the cut-off.

    Memoised per data set and subject (both immutable): every endpoint, population and
    sensitivity analysis asks again."""
    return dict(_events_view(data, subject))


def _detect_subject_events(data: TrialData, subject: SubjectData) -> dict[str, EventOccurrence]:
    return detect_events(
        data.protocol,
        visits=_visits_view(data, subject),
        visit_dates=subject.visit_dates,
        repeats=subject.repeats,
        device_days=subject.device_days,
        randomized_on=subject.randomized_on,
        withdrawn_on=subject.withdrawn_on,
        withdrawal_reason=subject.withdrawal_reason,
        cutoff_on=data.cutoff_on,
        evaluators=_evaluators(data),
    )


def used_the_dtx(data: TrialData, subject: SubjectData) -> bool | None:
    """Whether a participant's DTx-use streams (``kind: app_usage | training_minutes``) record
    any use from treatment start to the data cut-off; None when the protocol has no such stream
    (nothing tells). The report's "received the allocated DTx" and ADSL's actual treatment."""
    streams = [s.id for s in data.protocol.device_streams if s.kind in USE_STREAM_KINDS]
    if not streams:
        return None
    for stream in streams:
        for day, value in subject.device_days.get(stream, {}).items():
            if value > 0 and (subject.randomized_on is None or day >= subject.randomized_on) and (
                data.cutoff_on is None or day <= data.cutoff_on
            ):
                return True
    return False


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
    seen = _visits_view(data, subject)
    return all(v in seen for v in visits)


def _covariate_columns(endpoint: Endpoint) -> list[str]:
    return list(endpoint.analysis.covariates)


def _strata_columns(endpoint: Endpoint) -> list[str]:
    return list(endpoint.analysis.strata)


def _subject_row(data: TrialData, subject: SubjectData, endpoint: Endpoint) -> dict[str, object]:
    base = _baseline_view(data, subject)
    row: dict[str, object] = {"subject": subject.subject, "site": subject.site, "arm": subject.arm}
    for factor in _strata_columns(endpoint):
        row[factor] = subject.site if factor == "site" else subject.strata.get(factor)
    for covariate in _covariate_columns(endpoint):
        row[covariate] = _number(base.get(covariate))
    for subgroup in endpoint.analysis.subgroups:
        row[f"subgroup_{subgroup.id}"] = classify(
            subgroup.levels, base, evaluators=_evaluators(data)
        )
    return row


def _baseline(
    data: TrialData, subject: SubjectData, endpoint: Endpoint, field_id: str
) -> float | None:
    spec = endpoint.analysis
    visits = _visits_view(data, subject)
    if spec.baseline_visit:
        return _number(visits.get(spec.baseline_visit, {}).get(spec.baseline_field or field_id))
    return _number(_baseline_view(data, subject).get(spec.baseline_field or field_id))


def _assessed_on(
    data: TrialData, subject: SubjectData, visit_id: str, has_value: bool
) -> datetime.date | None:
    """The assessment's date, or (missing assessment) its scheduled date (§0 of the reference)."""
    on = subject.visit_dates.get(visit_id) if has_value else None
    if on is not None:
        return on
    try:
        visit = data.protocol.visit(visit_id)
    except KeyError:
        return subject.visit_dates.get(visit_id)
    if subject.randomized_on is not None and visit.anchor == "randomization":
        return subject.randomized_on + datetime.timedelta(days=visit.day)
    return subject.visit_dates.get(visit_id)


def _last_on_treatment(
    data: TrialData,
    subject: SubjectData,
    field_id: str,
    before: datetime.date,
    visits: Mapping[str, Values],
) -> tuple[str, Values] | None:
    """The last post-randomization visit recording ``field_id`` on or before ``before``."""
    best: tuple[datetime.date, str] | None = None
    for visit in data.protocol.schedule.visits:
        if visit.anchor == "randomization" and visit.day <= 0:
            continue
        if visit.anchor != "randomization":
            continue
        on = subject.visit_dates.get(visit.id)
        if on is None or on > before or _number(visits.get(visit.id, {}).get(field_id)) is None:
            continue
        if best is None or on > best[0]:
            best = (on, visit.id)
    return (best[1], visits[best[1]]) if best else None


def endpoint_frame(
    data: TrialData,
    endpoint: Endpoint,
    population: str | None = None,
) -> pd.DataFrame:
    """Return the analysis dataset of one endpoint (see the module docstring for columns)."""
    population = population or endpoint.estimand.analysis_set
    subjects = [s for s in data.subjects if in_population(data, s, population, endpoint)]
    rows: list[dict[str, object]] = []
    for subject in subjects:
        rows += _subject_rows(data, subject, endpoint)
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise AnalysisError(f"{endpoint.id}: no subjects in population {population}")
    for column in ("value", "baseline", "change", "response", "time", "event"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame.attrs["truncated"] = _truncated_counts(data, subjects, endpoint, rows)
    return frame


def _subject_rows(
    data: TrialData, subject: SubjectData, endpoint: Endpoint
) -> list[dict[str, object]]:
    """Return one subject's analysis rows of ``endpoint`` (memoised: read, never modified).

    The rows do not depend on the population, which only selects subjects: the main analysis,
    the per-protocol sensitivity analysis and the listings share them."""
    owners = (endpoint, subject)
    memo, key = _memo(data, "_rows_cache", owners)
    hit = _recall(memo, key, owners)
    if hit is None:
        hit = _derive_subject_rows(data, subject, endpoint)
        memo[key] = (owners, hit)
    return list(hit)


def _derive_subject_rows(
    data: TrialData, subject: SubjectData, endpoint: Endpoint
) -> list[dict[str, object]]:
    spec = endpoint.analysis
    named = [e.event for e in endpoint.estimand.intercurrent_events]
    binary = spec.model in BINARY_MODELS
    outcome = "response" if binary else ("change" if spec.change_from_baseline else "value")
    rows: list[dict[str, object]] = []
    common = _subject_row(data, subject, endpoint)
    events = _events_view(data, subject) if named else {}
    for event_id in named:
        common[f"ice_{event_id}"] = events[event_id].on.isoformat() if event_id in events \
            else None
    visits = _visits_view(data, subject)
    if spec.model in SURVIVAL_MODELS:
        return [{**common, **_time_to_event(data, subject, endpoint, visits, events)}]
    fields = spec.outcome_fields if spec.model == "gee_per_eye" else spec.outcome_fields[:1]
    eyes = ("right", "left") if spec.model == "gee_per_eye" else (None,)
    analysis_visits = spec.visits if spec.model == "mmrm" else spec.visits[-1:]
    for visit in analysis_visits:
        for eye, field_id in zip(eyes, fields, strict=False):
            values = visits.get(visit, {})
            value = _number(values.get(field_id))
            baseline = _baseline(data, subject, endpoint, field_id)
            row: dict[str, object] = {
                **common, "visit": visit, "ice_event": None, "ice_strategy": None,
                "ice_action": None,
            }
            governing = governing_event(
                endpoint, events, _assessed_on(data, subject, visit, value is not None)
            )
            strategy = governing[0].strategy if governing else "treatment_policy"
            if governing is not None and strategy != "treatment_policy":
                item, occurrence = governing
                row.update(ice_event=item.event, ice_strategy=strategy)
                if strategy == "hypothetical":
                    value, values = None, {}
                    row["ice_action"] = "set_missing"
                elif strategy == "while_on_treatment":
                    if spec.model == "mmrm":
                        row["ice_action"] = "truncated"
                        value, values = None, {}
                    else:
                        last = _last_on_treatment(
                            data, subject, field_id, occurrence.on, visits
                        )
                        values = last[1] if last else {}
                        value = _number(values.get(field_id))
                        row["ice_action"] = "last_on_treatment"
                        row["ice_from_visit"] = last[0] if last else None
                else:  # composite: set below, on the analysed scale
                    row["ice_action"] = "composite"
            row.update(value=value, baseline=baseline, change=(
                value - baseline if value is not None and baseline is not None else None
            ))
            if eye is not None:
                row["eye"] = eye
            if binary:
                row["response"] = _response(data, endpoint, field_id, values, visits)
            if row["ice_action"] == "composite" and governing is not None:
                composite = governing[0].composite_value
                row[outcome] = composite
                if outcome == "change" and composite is not None and baseline is not None:
                    row["value"] = baseline + composite
                elif outcome == "value" and composite is not None and baseline is not None:
                    row["change"] = composite - baseline
            if row["ice_action"] == "truncated":
                continue  # while on treatment, longitudinal: no post-event record
            rows.append(row)
    return rows


def _truncated_counts(
    data: TrialData, subjects: Sequence[SubjectData], endpoint: Endpoint,
    rows: Sequence[Mapping[str, object]],
) -> dict[str, int]:
    """Participants (by arm) with every analysis row removed by while-on-treatment truncation
    are still counted by the report: return how many per arm have no row left."""
    kept = {str(r["subject"]) for r in rows}
    out: dict[str, int] = {}
    for s in subjects:
        if s.subject not in kept and s.arm is not None:
            out[s.arm] = out.get(s.arm, 0) + 1
    return out


def _response(
    data: TrialData, endpoint: Endpoint, field_id: str, values: Values,
    visits: Mapping[str, Values],
) -> float | None:
    """1 for a responder, 0 for a non-responder, None when the outcome is missing."""
    if not values or values.get(field_id) in (None, "") or isinstance(values.get(field_id), dict):
        return None
    rule = endpoint.analysis.responder_if
    if rule is None:
        return 1.0 if str(values.get(field_id)) == "1" else 0.0
    result = _rule(data, rule)(values, visits)
    return None if result is None else (1.0 if truthy(result) else 0.0)


def _time_to_event(
    data: TrialData,
    subject: SubjectData,
    endpoint: Endpoint,
    visits: Mapping[str, Values],
    events: Mapping[str, EventOccurrence] | None = None,
) -> dict[str, object]:
    """The subject's time and event (``visits``: `visible_visits`), the estimand applied."""
    spec = endpoint.analysis
    memo, key = _memo(data, "_observed_cache", (subject,))
    key = (key, spec.event_if, spec.event_date_field)  # the only inputs besides the subject
    observed = _recall(memo, key, (subject,))
    if observed is None:  # endpoints sharing the event rule (KM, Cox) share the search
        observed = _observed_time_to_event(data, subject, endpoint, visits)
        memo[key] = ((subject,), observed)
    start = subject.randomized_on
    out: dict[str, object] = {**observed, "ice_event": None, "ice_strategy": None,
                              "ice_action": None}
    time, event = _number(observed["time"]), observed["event"]
    if start is None or time is None or not events:
        return out
    items = sorted(
        (
            (item, events[item.event]) for item in endpoint.estimand.intercurrent_events
            if item.strategy != "treatment_policy" and item.event in events
        ),
        key=lambda c: (c[1].on, PRECEDENCE.index(c[0].strategy)),
    )  # strategies apply in time order: the first event that precedes the outcome decides
    for item, occurrence in items:
        at = float(max((occurrence.on - start).days, 0))
        if at > time or (at == time and (item.strategy != "composite" or event)):
            break  # the outcome (or censoring) came first: nothing changes
        if item.strategy == "composite":
            out.update(time=at, event=1.0, ice_action="event_at_ice")
        else:
            out.update(time=at, event=0.0, ice_action="censored")
        out.update(ice_event=item.event, ice_strategy=item.strategy)
        break
    return out


def _observed_time_to_event(
    data: TrialData, subject: SubjectData, endpoint: Endpoint, visits: Mapping[str, Values]
) -> dict[str, object]:
    spec = endpoint.analysis
    start = subject.randomized_on
    if start is None:
        return {"time": None, "event": None}
    event_if = _rule(data, spec.event_if) if spec.event_if else None
    for visit in [v.id for v in data.protocol.schedule.visits] + list(visits):
        values = visits.get(visit, {})
        if values and event_if is not None and truthy(event_if(values, visits)):
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
