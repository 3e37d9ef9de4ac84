"""Simulated trial data for any protocol, to dry-run the analysis plan before real data
exist (and to test and benchmark it): plausible values for every field, a chosen treatment
effect on chosen fields, dropouts and screen failures; deterministic for a seed."""

from __future__ import annotations

import datetime
import random
from collections.abc import Mapping

from analysis.datasets import SubjectData, TrialData
from ecrf.checks import evaluate_form
from ecrf.model import FieldDef
from protocols.model import Protocol

START = datetime.date(2025, 1, 6)


def _value(field: FieldDef, rng: random.Random, on: datetime.date) -> object:
    low = field.min if isinstance(field.min, int | float) else 0
    high = field.max if isinstance(field.max, int | float) else low + 100
    if field.type == "integer":
        return rng.randint(int(low), int(high))
    if field.type in ("decimal", "slider"):
        return round(rng.uniform(float(low), float(high)), field.decimals or 1)
    if field.type == "yesno":
        return "1" if rng.random() < 0.5 else "0"
    if field.type == "single_choice":
        return rng.choice(field.choices).code
    if field.type == "multiple_choice":
        return [field.choices[0].code]
    if field.type == "date":
        return on.isoformat()
    if field.type == "text":
        return "text"
    return None


def _device_days(
    protocol: Protocol,
    rng: random.Random,
    randomized_on: datetime.date,
    dates: Mapping[str, datetime.date],
) -> dict[str, dict[datetime.date, float]]:
    """Daily use of every daily device stream from randomization to the last visit; about one
    participant in six stops using the app for good at a random day (its own generator, so
    the form values do not depend on it)."""
    end = max(dates.values(), default=randomized_on)
    span = (end - randomized_on).days
    stop = rng.randint(0, max(span, 0)) if rng.random() < 1 / 6 else None
    out: dict[str, dict[datetime.date, float]] = {}
    for stream in protocol.device_streams:
        if stream.cadence != "daily":
            continue
        low = stream.min if stream.min is not None and stream.min > 0 else 1.0
        high = min(stream.max if stream.max is not None else 60.0, 60.0)
        out[stream.id] = {
            randomized_on + datetime.timedelta(days=d): (
                0.0 if (stop is not None and d >= stop) or rng.random() < 0.15
                else round(rng.uniform(low, max(high, low)), 1)
            )
            for d in range(span + 1)
        }
    return out


def simulate_trial_data(
    protocol: Protocol,
    n: int,
    *,
    seed: int = 1,
    effects: Mapping[str, Mapping[str, float]] | None = None,
    dropout: float = 0.1,
) -> TrialData:
    """Simulate n screened subjects; every 9th fails screening.

    ``effects[field][arm]`` is reached linearly by the last visit (added to the subject's
    baseline value, plus noise, clipped to the field's range).
    """
    rng = random.Random(seed)
    effects = effects or {}
    arms = [a.code for a in protocol.arms for _ in range(a.ratio)]
    sites = [s.code for s in protocol.sites.initial_sites] or ["S1", "S2"]
    subjects = []
    for i in range(n):
        arm = arms[i % len(arms)] if i % 9 else None  # every 9th is a screen failure
        randomized_on = START + datetime.timedelta(days=i)
        visits: dict[str, dict[str, object]] = {}
        dates: dict[str, datetime.date] = {}
        dropped_at = rng.random() < dropout and arm is not None
        subject_level = {
            f.id: _value(f, rng, randomized_on) for form in protocol.forms for f in form.fields
        }
        for k, visit in enumerate(protocol.schedule.visits):
            if arm is None and visit.day > 0:
                break
            if dropped_at and k >= len(protocol.schedule.visits) - 1:
                break
            on = randomized_on + datetime.timedelta(days=visit.day)
            values: dict[str, object] = {}
            for form_id in visit.forms:
                form = protocol.form(form_id)
                raw = {
                    f.id: subject_level[f.id] if visit.day <= 0 else _value(f, rng, on)
                    for f in form.fields
                    if f.type not in ("calculated", "descriptive")
                }
                for field_id, by_arm in effects.items():
                    if field_id in raw and visit.day > 0 and arm is not None:
                        base = subject_level.get(field_id)
                        if isinstance(base, int | float):
                            shift = (
                                by_arm.get(arm, 0.0)
                                * visit.day
                                / max(protocol.schedule.visits[-1].day, 1)
                            )
                            field = form.field(field_id)
                            low = field.min if isinstance(field.min, int | float) else -1e9
                            high = field.max if isinstance(field.max, int | float) else 1e9
                            new = min(max(base + shift + rng.gauss(0, 0.5), low), high)
                            raw[field_id] = (
                                round(new)
                                if isinstance(base, int)
                                else round(new, field.decimals or 1)
                            )
                evaluation = evaluate_form(form, raw, today=on, submit=False)
                values.update(evaluation.values)
            visits[visit.id] = values
            dates[visit.id] = on
        device_days = _device_days(protocol, random.Random(seed * 7919 + i), randomized_on, dates)
        subjects.append(
            SubjectData(
                subject=f"S-{i:04d}",
                site=sites[i % len(sites)],
                status="screen_failed"
                if arm is None
                else ("withdrawn" if dropped_at else "randomized"),
                arm=arm,
                randomized_on=randomized_on if arm else None,
                withdrawn_on=randomized_on + datetime.timedelta(days=60) if dropped_at else None,
                withdrawal_reason="lost to follow-up"
                if dropped_at and i % 2
                else ("withdrew consent" if dropped_at else None),
                strata={f.id: rng.choice(f.levels).code for f in protocol.randomization.factors},
                visits=visits,
                visit_dates=dates,
                repeats={
                    "adverse_events": (
                        {
                            "ae_term": rng.choice(["headache", "fatigue"]),
                            "ae_serious": "1" if i % 13 == 0 else "0",
                        },
                    )
                }
                if arm and i % 3 == 0
                else {},
                adherent=(i % 5 != 0) if arm else None,
                failed_criteria=("inc_age",) if arm is None else (),
                device_days=device_days if arm else {},
            )
        )
    return TrialData(protocol=protocol, subjects=tuple(subjects))
