"""Populate a trial with simulated participants through the same services as real users.

Every action is the service call a site would make (screen, consent, forms, eligibility,
enrollment, randomization, visit dates, ePRO answers, device data, withdrawal), so the data are
validated by the form engine and covered by the audit trail. System timestamps are the real
time of the simulation; the clinical dates (visit dates, form date fields, consent signatures,
device observations) follow a simulated calendar in which the trial ran over the ~18 months
before `today`.

The example protocols get realistic values and a plausible treatment effect (see `PROFILES`);
any other protocol gets plain in-range values. The arm is read from the allocation row only to
shape the simulated outcomes; it is never returned or printed.
"""

from __future__ import annotations

import datetime
import heapq
import math
import random
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dtx_trials.db import simulated_clock, utcnow
from dtx_trials.models import Allocation, Consent, FormRecord, Participant, Site, Trial, User
from dtx_trials.models.users import Role
from dtx_trials.services import (
    accounts,
    audit,
    devices,
    epro,
    forms,
    participants,
    randomization,
)
from dtx_trials.services.access import Actor, Grant
from dtx_trials.services.deviations import site_zone
from dtx_trials.services.errors import Conflict
from dtx_trials.services.protocols import active_protocol
from ecrf.model import FieldDef, FormDef, VisitDef
from protocols.model import Protocol

Values = dict[str, object]
ProgressCallback = Callable[[int, int], None]

SPAN_DAYS = 540  # the simulated trial ran over the last ~18 months
SCREEN_FAIL_RATE = 0.15
DROPOUT_RATE = 0.10
MISSED_VISIT_RATE = 0.05
STILL_SCREENING_RATE = 0.03
# sites open one after another over the first half of accrual (the first on day 0); each
# site's people are spread over the days it recruits, so enrolment speeds up as sites open
SITE_STAGGER = 0.5
# the simulated clock's time of day for a step on a date, at the participant's site
STEP_TIME = datetime.time(10, 0)
DEVICE_BATCH = 20_000

SIMULATOR = Actor(
    user_id=None,
    username="simulator",
    printed_name="Trial simulator",
    via="cli",
    is_superuser=True,
)

WITHDRAWAL_REASONS = (
    ("withdrew", "Participant withdrew consent"),
    ("lost", "Lost to follow-up: no response to three contact attempts"),
    ("withdrew", "Moved away from the study site"),
    ("ae", "Adverse event: stopped participation on the investigator's advice"),
    ("withdrew", "Could not keep up with the study app"),
)


@dataclass(frozen=True)
class SimulationSummary:
    """What the simulation created (counts only; never arms)."""

    screened: int
    screen_failed: int
    enrolled: int
    randomized: int
    withdrawn: int
    forms_submitted: int
    adverse_events: int
    device_records: int


@dataclass
class _Counts:
    screened: int = 0
    screen_failed: int = 0
    enrolled: int = 0
    randomized: int = 0
    withdrawn: int = 0
    forms_submitted: int = 0
    adverse_events: int = 0
    device_records: int = 0


@dataclass
class Subject:
    """One simulated person: latent traits, the simulated calendar, and the plan for them."""

    index: int
    rng: random.Random
    site: Site
    screening_on: datetime.date
    randomized_on: datetime.date
    will_fail: bool
    still_screening: bool
    dropout_after: int | None  # number of post-randomization visits done before dropping out
    traits: dict[str, Any] = field(default_factory=dict)
    arm: str | None = None
    is_active_arm: bool = False


# ---------------------------------------------------------------- generic values


def _in_range(field_def: FieldDef, value: float) -> float:
    low = field_def.min if isinstance(field_def.min, int | float) else None
    high = field_def.max if isinstance(field_def.max, int | float) else None
    if low is not None:
        value = max(float(low), value)
    if high is not None:
        value = min(float(high), value)
    return value


def generic_value(field_def: FieldDef, rng: random.Random, on: datetime.date) -> object:
    """Return a plausible in-range value for a field (None for derived or display fields)."""
    low = field_def.min if isinstance(field_def.min, int | float) else 0.0
    high = field_def.max if isinstance(field_def.max, int | float) else float(low) + 10.0
    middle, spread = (float(low) + float(high)) / 2, (float(high) - float(low)) / 6
    if field_def.type == "integer":
        return round(_in_range(field_def, rng.gauss(middle, spread)))
    if field_def.type in ("decimal", "slider"):
        value = _in_range(field_def, rng.gauss(middle, spread))
        return (
            round(value, field_def.decimals or 1) if field_def.type == "decimal" else round(value)
        )
    if field_def.type == "yesno":
        return "0" if rng.random() < 0.7 else "1"
    if field_def.type == "single_choice" and field_def.choices:
        return rng.choice(field_def.choices).code
    if field_def.type == "multiple_choice" and field_def.choices:
        return [rng.choice(field_def.choices).code]
    if field_def.type == "date":
        return on.isoformat()
    if field_def.type == "text" and not field_def.identifier and field_def.required:
        return "see source document"
    return None


def form_values(
    form: FormDef, rng: random.Random, on: datetime.date, overrides: Mapping[str, object]
) -> Values:
    """Fill a form: profile values first, generic in-range values for the remaining fields."""
    values: Values = {}
    for field_def in form.fields:
        if field_def.type in ("calculated", "descriptive"):
            continue
        if field_def.id in overrides:
            value = overrides[field_def.id]
        else:
            value = generic_value(field_def, rng, on)
        if value is not None:
            values[field_def.id] = value
    return values


def split_total(total: int, maxima: Sequence[int], rng: random.Random) -> list[int]:
    """Spread a scale total over items with the given maxima (each item within its range)."""
    total = max(0, min(total, sum(maxima)))
    items = [0] * len(maxima)
    weights = [m * rng.uniform(0.6, 1.4) for m in maxima]
    for _ in range(total):
        open_items = [i for i, m in enumerate(maxima) if items[i] < m]
        pick = rng.choices(open_items, weights=[weights[i] for i in open_items])[0]
        items[pick] += 1
    return items


# ---------------------------------------------------------------- per-protocol profiles


class Profile:
    """Values and effects for one therapeutic area; the base class gives generic data."""

    ae_terms: tuple[str, ...] = ("headache", "fatigue", "nasopharyngitis", "dizziness")
    serious_ae_terms: tuple[str, ...] = ("hospitalisation for pneumonia",)
    ae_rate = 0.35  # expected AEs per participant over the follow-up

    def traits(self, subject: Subject) -> None:
        """Draw the subject's latent characteristics."""

    def screening(self, subject: Subject, failing: str | None) -> Values:
        """Screening values; `failing` names the criterion the subject fails (or None)."""
        return {}

    def criteria(self, protocol: Protocol) -> list[str]:
        return [c.id for c in protocol.eligibility]

    def visit(
        self, subject: Subject, visit: VisitDef, fraction: float, on: datetime.date
    ) -> Values:
        """Values of the post-randomization visit at `fraction` of the follow-up."""
        return {}

    def end_of_study(self, subject: Subject, status: str, on: datetime.date) -> Values:
        return {"eos_on": on.isoformat(), "eos_status": status}

    def adverse_event(self, subject: Subject, onset_on: datetime.date, serious: bool) -> Values:
        rng = subject.rng
        term = rng.choice(self.serious_ae_terms if serious else self.ae_terms)
        return {
            "ae_term": term,
            "ae_onset_on": onset_on.isoformat(),
            "ae_serious": "1" if serious else "0",
            "ae_hypo": "0",
        }

    def daily_usage(self, subject: Subject, stream_id: str, day: int) -> float:
        """Minutes of use on a day of follow-up (0 when the app was not opened)."""
        propensity = subject.traits.setdefault("adherence", subject.rng.betavariate(6, 2.5))
        decay = 1 - 0.25 * min(day / 180, 1)
        if subject.rng.random() > propensity * decay:
            return 0.0
        return max(1.0, subject.rng.gauss(25, 8))


class CognitiveProfile(Profile):
    """MCI: ADAS-Cog-13 improves ~2 points more on training than sham by week 24 (SD ~6)."""

    ae_terms = ("headache", "eye strain", "fatigue", "dizziness", "insomnia", "anxiety")
    serious_ae_terms = ("fall with hip fracture", "transient ischaemic attack", "pneumonia")
    adas_maxima = (10, 5, 5, 10, 5, 5, 8, 12, 5, 5, 5, 5, 5)

    def traits(self, subject: Subject) -> None:
        rng = subject.rng
        education = max(0, min(22, round(rng.gauss(10, 3.5))))
        subject.traits.update(
            age=max(60, min(85, round(rng.gauss(72, 6)))),
            sex=rng.choice(("1", "2")),
            education=education,
            edu_point="1" if education <= 12 else "0",
            moca=rng.randint(18, 25),
            adas0=max(6.0, min(45.0, rng.gauss(20, 6))),
            slope=rng.gauss(0, 5.2),
        )

    def screening(self, subject: Subject, failing: str | None) -> Values:
        rng, t = subject.rng, subject.traits
        values: Values = {
            "screening_on": subject.screening_on.isoformat(),
            "age": t["age"],
            "sex": t["sex"],
            "education_years": t["education"],
            "gds_total": rng.randint(0, 8),
            "dementia_dx": "0",
            "study_partner": "1",
            "has_device": "1",
            "achei_use": "1" if rng.random() < 0.2 else "0",
        }
        moca_total = t["moca"]
        if failing == "inc_age":
            values["age"] = rng.choice((rng.randint(55, 59), rng.randint(86, 90)))
        elif failing == "inc_moca":
            moca_total = rng.choice((rng.randint(13, 17), rng.randint(26, 28)))
        elif failing == "inc_partner":
            values["study_partner"] = "0"
        elif failing == "inc_device":
            values["has_device"] = "0"
        elif failing == "exc_dementia":
            values["dementia_dx"] = "1"
        elif failing == "exc_depression":
            values["gds_total"] = rng.randint(10, 14)
        edu = 1 if t["edu_point"] == "1" else 0
        raw = max(0, min(30, moca_total - edu))
        values.update(moca_raw=raw, moca_edu_point=t["edu_point"])
        return values

    def visit(
        self, subject: Subject, visit: VisitDef, fraction: float, on: datetime.date
    ) -> Values:
        rng, t = subject.rng, subject.traits
        drift = 0.5 * fraction  # slow decline on sham
        benefit = -2.0 * fraction if subject.is_active_arm else 0.0
        total = t["adas0"] + drift + benefit + t["slope"] * fraction + rng.gauss(0, 2.0)
        if fraction == 0:
            total = t["adas0"]
        items = split_total(round(total), self.adas_maxima, rng)
        values: Values = {f"adas_q{i + 1:02d}": v for i, v in enumerate(items)}
        problem = rng.random() < 0.15
        values.update(
            app_ease=max(0, min(10, round(rng.gauss(7.5, 1.8)))),
            app_problem="1" if problem else "0",
        )
        if problem:
            values["app_problem_text"] = rng.choice(
                (
                    "App froze during a session",
                    "Could not log in after an update",
                    "Sound did not play",
                )
            )
        if fraction >= 1:
            moca_total = t["moca"] + (1 if subject.is_active_arm else 0) + round(rng.gauss(0, 1.5))
            edu = 1 if t["edu_point"] == "1" else 0
            values.update(
                moca_raw=max(0, min(30, moca_total - edu)),
                moca_edu_point=t["edu_point"],
                achei_started="1" if rng.random() < 0.05 else "0",
            )
        return values

    def end_of_study(self, subject: Subject, status: str, on: datetime.date) -> Values:
        return {
            **super().end_of_study(subject, status, on),
            "achei_started": subject.traits.get("achei_started", "0"),
        }

    def daily_usage(self, subject: Subject, stream_id: str, day: int) -> float:
        minutes = super().daily_usage(subject, stream_id, day)
        return 0.0 if minutes == 0 else max(5.0, min(120.0, subject.rng.gauss(32, 9)))


def _se(value: float) -> float:
    # the protocol's mean-SE field accepts -6.00 to -0.50 D (the enrolled range)
    return round(max(-5.99, min(-0.51, value)), 2)


class MyopiaProfile(Profile):
    """Myopia: SE progression -0.50 D/yr (coaching) vs -0.75 D/yr; axial length +0.20 vs
    +0.30 mm/yr; the two eyes of a child are strongly correlated."""

    ae_terms = ("eye strain", "headache", "sunburn", "minor fall outdoors", "conjunctivitis")
    serious_ae_terms = ("forearm fracture after a fall", "appendicitis")
    ae_rate = 0.25

    def traits(self, subject: Subject) -> None:
        rng = subject.rng
        se = max(-5.5, min(-0.75, rng.gauss(-2.2, 1.1)))
        aniso = rng.gauss(0, 0.3)
        axial = 23.4 - 0.35 * se + rng.gauss(0, 0.4)
        subject.traits.update(
            age=rng.randint(6, 12),
            sex=rng.choice(("1", "2")),
            se_right=se,
            se_left=max(-5.9, min(-0.6, se + aniso)),
            al_right=axial,
            al_left=axial + rng.gauss(0, 0.1) - 0.35 * aniso,
            child_se=rng.gauss(0, 0.3),
            child_al=rng.gauss(0, 0.08),
            screen=max(0.5, rng.gauss(2.6, 0.9)),
            outdoor=max(0.2, rng.gauss(1.1, 0.5)),
        )

    def screening(self, subject: Subject, failing: str | None) -> Values:
        rng, t = subject.rng, subject.traits
        values: Values = {
            "screening_on": subject.screening_on.isoformat(),
            "age_years": t["age"],
            "child_sex": t["sex"],
            "parental_myopia": rng.choice(("0", "1", "1", "2")),
            "prior_myopia_control": "0",
            "ocular_disease": "0",
            "guardian_phone": "1",
            "cyclo_done": "1",
            "se_right": round(t["se_right"], 2),
            "se_left": round(t["se_left"], 2),
            "al_right": round(t["al_right"], 2),
            "al_left": round(t["al_left"], 2),
            "al_device": rng.choice(("IOLMaster 700", "Lenstar LS 900")),
        }
        if failing == "inc_age":
            values["age_years"] = rng.choice((4, 5, 13, 14))
        elif failing == "inc_se":
            values["se_right"] = round(rng.uniform(-0.25, 0.0), 2)
            values["se_left"] = round(rng.uniform(-1.75, -1.25), 2)
        elif failing == "inc_aniso":
            values["se_left"] = round(float(values["se_right"]) + 1.75, 2)  # type: ignore[arg-type]
            if float(values["se_left"]) > -0.5:  # type: ignore[arg-type]
                values["se_right"], values["se_left"] = -3.0, -1.25
        elif failing == "inc_guardian_phone":
            values["guardian_phone"] = "0"
        elif failing == "exc_prior_treatment":
            values["prior_myopia_control"] = "1"
        elif failing == "exc_ocular":
            values["ocular_disease"] = "1"
        return values

    def visit(
        self, subject: Subject, visit: VisitDef, fraction: float, on: datetime.date
    ) -> Values:
        rng, t = subject.rng, subject.traits
        years = visit.day / 365
        se_rate = -0.50 if subject.is_active_arm else -0.75
        al_rate = 0.20 if subject.is_active_arm else 0.30
        se_shift = (se_rate + t["child_se"]) * years
        al_shift = (al_rate + t["child_al"]) * years
        screen_drop = 0.7 * fraction if subject.is_active_arm else 0.1 * fraction
        outdoor_gain = 0.6 * fraction if subject.is_active_arm else 0.1 * fraction
        return {
            "cyclo_done": "1",
            "se_right": _se(t["se_right"] + se_shift + rng.gauss(0, 0.12)),
            "se_left": _se(t["se_left"] + se_shift + rng.gauss(0, 0.12)),
            "al_right": round(t["al_right"] + al_shift + rng.gauss(0, 0.03), 2),
            "al_left": round(t["al_left"] + al_shift + rng.gauss(0, 0.03), 2),
            "al_device": "IOLMaster 700",
            "diary_answered_by": "child" if t["age"] >= 10 and rng.random() < 0.6 else "guardian",
            "screen_weekday_h": round(max(0.0, t["screen"] - screen_drop + rng.gauss(0, 0.4)), 1),
            "screen_weekend_h": round(
                max(0.0, 1.6 * t["screen"] - screen_drop + rng.gauss(0, 0.6)), 1
            ),
            "outdoor_reported_h": round(
                max(0.0, t["outdoor"] + outdoor_gain + rng.gauss(0, 0.3)), 1
            ),
            "glasses_worn": "1",
        }

    def end_of_study(self, subject: Subject, status: str, on: datetime.date) -> Values:
        rescue = "1" if subject.rng.random() < 0.03 else "0"
        return {**super().end_of_study(subject, status, on), "rescue_myopia_tx": rescue}

    def daily_usage(self, subject: Subject, stream_id: str, day: int) -> float:
        rng = subject.rng
        if stream_id == "outdoor_minutes":
            base = 60 * subject.traits["outdoor"] + (35 if subject.is_active_arm else 5)
            return float(max(0, min(600, round(rng.gauss(base, 30)))))
        minutes = super().daily_usage(subject, stream_id, day)
        return 0.0 if minutes == 0 else max(5.0, min(60.0, rng.gauss(12, 5)))


class DiabetesProfile(Profile):
    """T2D: HbA1c -0.8 (app) vs -0.3 % (usual care) at week 24 from ~8.2 %, SD 0.9; rescue
    medication more often on usual care."""

    ae_terms = (
        "hypoglycaemia",
        "nausea",
        "diarrhoea",
        "upper respiratory tract infection",
        "back pain",
    )
    serious_ae_terms = (
        "hospitalisation for pneumonia",
        "severe hypoglycaemia",
        "myocardial infarction",
    )
    ae_rate = 0.45

    def traits(self, subject: Subject) -> None:
        rng = subject.rng
        sex = rng.choice(("1", "2"))
        height = rng.gauss(171 if sex == "1" else 159, 6)
        hba1c = max(7.0, min(10.5, rng.gauss(8.2, 0.75)))
        subject.traits.update(
            age=max(30, min(75, round(rng.gauss(56, 9)))),
            sex=sex,
            height=height,
            weight=max(45.0, 27 * (height / 100) ** 2 + rng.gauss(0, 9)),
            hba1c=hba1c,
            response=rng.gauss(0, 0.9),
            dds=rng.randint(2, 5),
        )

    def screening(self, subject: Subject, failing: str | None) -> Values:
        rng, t = subject.rng, subject.traits
        values: Values = {
            "screening_on": subject.screening_on.isoformat(),
            "age": t["age"],
            "sex": t["sex"],
            "pregnant": "0",
            "diabetes_years": round(max(0.5, rng.gauss(7, 4)), 1),
            "hba1c_scr": round(t["hba1c"], 1),
            "egfr": max(35, min(130, round(rng.gauss(85, 18)))),
            "metformin_stable": "1",
            "insulin_use": "0",
            "smartphone": "1",
        }
        if failing == "inc_age":
            values["age"] = rng.randint(76, 82)
        elif failing == "inc_hba1c":
            values["hba1c_scr"] = rng.choice((6.5, 6.8, 10.9, 11.6))
        elif failing == "inc_metformin":
            values["metformin_stable"] = "0"
        elif failing == "inc_phone":
            values["smartphone"] = "0"
        elif failing == "exc_insulin":
            values["insulin_use"] = "1"
        elif failing == "exc_egfr":
            values["egfr"] = rng.randint(20, 29)
        elif failing == "exc_pregnancy":
            values.update(sex="2", age=min(int(t["age"]), 40), pregnant="1")
        return values

    def criteria(self, protocol: Protocol) -> list[str]:
        # the common real-world reasons, weighted: HbA1c out of range dominates
        return [
            "inc_hba1c",
            "inc_hba1c",
            "inc_hba1c",
            "exc_insulin",
            "exc_egfr",
            "inc_metformin",
            "inc_age",
        ]

    def hba1c(self, subject: Subject, fraction: float) -> float:
        """The subject's expected HbA1c at `fraction` of the follow-up (before visit noise)."""
        t = subject.traits
        effect = -0.8 if subject.is_active_arm else -0.3
        return float(t["hba1c"]) + (effect + float(t["response"])) * fraction

    def visit(
        self, subject: Subject, visit: VisitDef, fraction: float, on: datetime.date
    ) -> Values:
        rng, t = subject.rng, subject.traits
        hba1c = max(5.0, min(14.0, self.hba1c(subject, fraction) + rng.gauss(0, 0.15)))
        weight = (
            t["weight"] - (2.0 if subject.is_active_arm else 0.5) * fraction + rng.gauss(0, 0.8)
        )
        sbp = round(rng.gauss(134, 12))
        dds_shift = -1 if subject.is_active_arm and fraction > 0.4 else 0
        return {
            "weight_kg": round(weight, 1),
            "height_cm": round(t["height"], 1),
            "sbp": sbp,
            "dbp": min(sbp - 25, round(rng.gauss(82, 8))),
            "lab_sampled_on": on.isoformat(),
            "hba1c_pct": round(hba1c, 1),
            "fpg_mmol": round(max(3.5, 1.59 * hba1c - 2.59 + rng.gauss(0, 0.8)), 1),
            "dds2_1": max(1, min(6, t["dds"] + dds_shift + rng.choice((-1, 0, 0, 1)))),
            "dds2_2": max(1, min(6, t["dds"] + dds_shift + rng.choice((-1, 0, 0, 1)))),
        }

    def end_of_study(self, subject: Subject, status: str, on: datetime.date) -> Values:
        values = super().end_of_study(subject, status, on)
        rescue_on = subject.traits.get("rescue_on")
        values["rescue_started"] = "1" if rescue_on else "0"
        if rescue_on:
            values["rescue_on"] = rescue_on.isoformat()
        return values

    def adverse_event(self, subject: Subject, onset_on: datetime.date, serious: bool) -> Values:
        values = super().adverse_event(subject, onset_on, serious)
        is_hypo = "hypoglycaemia" in str(values["ae_term"])
        values["ae_hypo"] = "1" if is_hypo else "0"
        if is_hypo:
            values["ae_hypo_level"] = "3" if serious else subject.rng.choice(("1", "1", "2"))
        return values

    def daily_usage(self, subject: Subject, stream_id: str, day: int) -> float:
        minutes = super().daily_usage(subject, stream_id, day)
        if subject.is_active_arm:
            return 0.0 if minutes == 0 else max(3.0, min(90.0, subject.rng.gauss(14, 6)))
        return 0.0 if minutes == 0 else max(1.0, min(30.0, subject.rng.gauss(5, 2)))


class DepressionProfile(Profile):
    """Adolescent depression: CDRS-R falls 16 points over 12 weeks with either programme and
    11 with the attention control (SD 8); the weekly PHQ-A follows it; item 9 (self-harm
    thoughts) is above 0 in about one answer in ten."""

    ae_terms = ("headache", "sleep problems", "irritability", "eye strain", "nausea")
    serious_ae_terms = ("hospital admission for self-harm", "hospital admission for appendicitis")
    ae_rate = 0.3

    def traits(self, subject: Subject) -> None:
        rng = subject.rng
        subject.traits.update(
            age=rng.randint(12, 17),
            sex=rng.choice(("1", "2", "2")),
            cdrs=max(40, min(80, round(rng.gauss(56, 7)))),
            phqa=rng.randint(11, 18),
            response=rng.gauss(0, 8),
        )

    def _phq_items(self, subject: Subject, total: int) -> Values:
        rng = subject.rng
        items = split_total(max(0, total), [3] * 8, rng)
        item9 = 1 if rng.random() < 0.1 else 0
        return {**{f"phqa_{i}": v for i, v in enumerate(items, start=1)}, "phqa_9": item9}

    def screening(self, subject: Subject, failing: str | None) -> Values:
        rng, t = subject.rng, subject.traits
        values: Values = {
            "screening_on": subject.screening_on.isoformat(),
            "age_years": t["age"],
            "sex": t["sex"],
            "has_phone": "1",
            "suicide_plan": "0",
            "psychosis_bipolar": "0",
            "antidepressant": "1" if rng.random() < 0.2 else "0",
            **self._phq_items(subject, t["phqa"]),
        }
        values["phqa_9"] = 0  # an item-9 answer at screening goes to the clinician at once
        if failing == "inc_age":
            values["age_years"] = rng.choice((10, 11, 18, 19))
        elif failing == "inc_phqa":
            values.update(self._phq_items(subject, rng.choice((4, 6, 22))))
            values["phqa_9"] = 0
        elif failing == "inc_phone":
            values["has_phone"] = "0"
        elif failing == "exc_suicide_plan":
            values["suicide_plan"] = "1"
        elif failing == "exc_psychosis":
            values["psychosis_bipolar"] = "1"
        return values

    def visit(
        self, subject: Subject, visit: VisitDef, fraction: float, on: datetime.date
    ) -> Values:
        rng, t = subject.rng, subject.traits
        drop = (16 if subject.is_active_arm else 11) * fraction + t["response"] * fraction
        cdrs = max(17, min(113, round(t["cdrs"] - drop + rng.gauss(0, 3))))
        phqa = round(t["phqa"] * (cdrs - 17) / max(1, t["cdrs"] - 17))
        return {"cdrs_total": cdrs, "cdrs_by_interview": "1",
                **self._phq_items(subject, min(24, phqa))}

    def end_of_study(self, subject: Subject, status: str, on: datetime.date) -> Values:
        changed = subject.rng.random() < 0.05
        values = {**super().end_of_study(subject, status, on),
                  "started_antidepressant": "1" if changed else "0"}
        if changed:
            values["antidepressant_on"] = on.isoformat()
        return values

    def adverse_event(self, subject: Subject, onset_on: datetime.date, serious: bool) -> Values:
        values = super().adverse_event(subject, onset_on, serious)
        values.pop("ae_hypo", None)
        values["ae_related"] = "no"
        return values


PROFILES: dict[str, type[Profile]] = {
    "MCI-COGTRAIN-01": CognitiveProfile,
    "MYOPIA-DTX-01": MyopiaProfile,
    "T2D-COACH-01": DiabetesProfile,
    "ADOL-DEP-01": DepressionProfile,
}


def profile_for(protocol: Protocol) -> Profile:
    """The value profile of a protocol (plain in-range values for protocols without one)."""
    return PROFILES.get(protocol.code, Profile)()


# ---------------------------------------------------------------- staff


def ensure_staff(session: Session, trial: Trial, role: str, site: Site | None = None) -> Actor:
    """Return the simulated staff member holding `role` (at `site`), creating them if needed.

    Accounts get a random password that is never shown: they exist to sign the audit trail.
    """
    suffix = f"{site.code}-{role}" if site is not None else role
    username = f"sim-{trial.code}-{suffix}".lower().replace("_", "-")
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        name = role.replace("_", " ").title()
        user = accounts.create_user(
            session,
            SIMULATOR,
            username=username,
            printed_name=f"{name} {site.code if site else trial.code} (simulated)",
            password=secrets.token_urlsafe(24),
        )
    actor = accounts.actor_for(session, user, via="cli")
    wanted = Grant(trial.id, site.id if site else None, Role(role))
    if wanted not in actor.grants:
        accounts.grant_role(
            session,
            SIMULATOR,
            trial_id=trial.id,
            user_id=user.id,
            role=role,
            site_id=site.id if site else None,
        )
        actor = accounts.actor_for(session, user, via="cli")
    return actor


# ---------------------------------------------------------------- the simulation


class _Run:
    """One simulation: the trial's staff, its calendar, the running counts."""

    def __init__(
        self,
        session: Session,
        trial: Trial,
        protocol: Protocol,
        rng: random.Random,
        today: datetime.date,
    ) -> None:
        self.session = session
        self.trial = trial
        self.protocol = protocol
        self.profile = profile_for(protocol)
        self.rng = rng
        self.today = today
        self.counts = _Counts()
        self.sites = list(
            session.scalars(
                select(Site).where(Site.trial_id == trial.id, Site.is_active).order_by(Site.code)
            )
        )
        if not self.sites:
            raise Conflict(f"trial {trial.code} has no active site to screen at")
        self.investigators = {
            s.id: ensure_staff(session, trial, "investigator", s) for s in self.sites
        }
        self.data_manager = ensure_staff(session, trial, "data_manager")
        # a protocol's outcome-assessor forms are entered by a (blinded) assessor of the site
        self.assessors = (
            {s.id: ensure_staff(session, trial, "outcome_assessor", s) for s in self.sites}
            if any(f.respondent == "outcome_assessor" for f in protocol.forms)
            else {}
        )
        self.device_batch: list[dict[str, object]] = []
        visits = protocol.schedule.visits
        self.screening_visits = [v for v in visits if v.day < 0]
        self.follow_up = [v for v in visits if v.day >= 0]
        last = max((v.day + v.window_after for v in self.follow_up), default=0)
        self.last_day = max(1, max((v.day for v in self.follow_up), default=1))
        lead = max((-v.day + v.window_before for v in self.screening_visits), default=14)
        # accrual fills the span left once the screening lead and the follow-up are allowed for
        self.accrual_days = max(60, SPAN_DAYS - lead - last)
        self.first_randomization = today - datetime.timedelta(days=SPAN_DAYS - lead)
        control = [a.code for a in protocol.arms if a.is_control]
        self.control_arms = set(control or [protocol.arms[-1].code])
        self.eos_form = self._eos_form()
        self.ae_form = next(
            (f for f in protocol.forms if f.repeating and any(x.id == "ae_term" for x in f.fields)),
            None,
        )

    def _eos_form(self) -> FormDef | None:
        for form in self.protocol.forms:
            if any(f.id == "eos_status" for f in form.fields) and self.protocol.visits_of_form(
                form.id
            ):
                return form
        return None

    # -- one participant

    def subject(self, index: int, n: int) -> Subject:
        """Draw the index-th of n people: site, dates, screening fate, dropout, traits."""
        rng = random.Random(self.rng.getrandbits(64))
        place = (index + rng.random()) / max(n, 1)  # where in the accrual, 0..1
        screening = self.screening_visits[0] if self.screening_visits else None
        if screening is not None:
            low, high = (
                screening.day - screening.window_before,
                screening.day + screening.window_after,
            )
            lead = rng.randint(low, min(high, -1))
        else:
            lead = -rng.randint(3, 14)
        still = index >= n - max(1, round(n * STILL_SCREENING_RATE)) and n >= 10
        still_on = self.today - datetime.timedelta(days=rng.randint(1, 10)) if still else None
        n_visits = len(self.follow_up)
        dropout_after = (
            rng.randint(0, max(0, n_visits - 2)) if rng.random() < DROPOUT_RATE else None
        )
        site_index = rng.randrange(len(self.sites))
        opens = round(
            self.accrual_days * SITE_STAGGER * site_index / max(1, len(self.sites) - 1)
        )
        offset = opens + round((self.accrual_days - opens) * place)
        randomized_on = self.first_randomization + datetime.timedelta(days=offset)
        subject = Subject(
            index=index,
            rng=rng,
            site=self.sites[site_index],
            screening_on=still_on or randomized_on + datetime.timedelta(days=lead),
            randomized_on=randomized_on,
            will_fail=not still and rng.random() < SCREEN_FAIL_RATE,
            still_screening=still,
            dropout_after=dropout_after,
        )
        self.profile.traits(subject)
        return subject

    def simulate(self, subject: Subject) -> Iterator[datetime.date]:
        """Take one person from screening as far as their simulated calendar reaches, one step
        per date: yield the date of the next step, then (when resumed) take it."""
        session, trial = self.session, self.trial
        yield subject.screening_on
        staff = self.investigators[subject.site.id]
        participant = participants.screen_participant(session, staff, trial, subject.site.code)
        code = participant.subject_code
        self.counts.screened += 1
        self._consent(staff, code, subject)
        failing = None
        if subject.will_fail:
            failing = subject.rng.choice(self.profile.criteria(self.protocol))
        screening_values = {
            **self._demographics(subject), **self.profile.screening(subject, failing)
        }
        for visit in self.screening_visits:
            for form_code in visit.forms:
                self._save(
                    staff,
                    code,
                    visit.id,
                    form_code,
                    subject,
                    screening_values,
                    subject.screening_on,
                )
            participants.record_visit_date(
                session, staff, trial, code, visit.id, subject.screening_on
            )
        if subject.still_screening:
            return
        result = participants.assess_eligibility(
            session, staff, trial, code, today=subject.screening_on
        )
        if not result.is_eligible:
            if result.failed:
                self.counts.screen_failed += 1
            return
        yield subject.randomized_on
        participants.enroll_participant(session, staff, trial, code)
        self.counts.enrolled += 1
        allocation, _ = randomization.randomize_participant(
            session, staff, trial, code, request_id=f"sim-{trial.code}-{subject.index}"
        )
        self.counts.randomized += 1
        arm = session.scalar(select(Allocation.arm_code).where(Allocation.id == allocation.id))
        subject.arm = arm
        subject.is_active_arm = arm not in self.control_arms
        yield from self._follow(staff, code, subject)

    def _demographics(self, subject: Subject) -> Values:
        """Race and ethnicity answers where the screening form asks them (mostly Asian at
        Chinese sites; some decline to answer)."""
        fields = {f.id for form in self.protocol.forms for f in form.fields}
        values: Values = {}
        if "race" in fields:
            values["race"] = subject.rng.choices(
                ("asian", "white", "other", "not_reported"), weights=(90, 3, 2, 5))[0]
        if "ethnic" in fields:
            values["ethnic"] = subject.rng.choices(
                ("not_hispanic", "hispanic", "not_reported"), weights=(93, 1, 6))[0]
        return values

    def _consent(self, staff: Actor, code: str, subject: Subject) -> None:
        documents: dict[tuple[str, str], list[Any]] = {}
        for document in self.protocol.consents:
            documents.setdefault((document.id, document.version), []).append(document)
        prefers_zh = subject.site.country in ("CN", "HK", "TW")
        signed_at = datetime.datetime.combine(
            subject.screening_on, datetime.time(9, 30), tzinfo=datetime.UTC
        )
        for (document_id, version), versions in documents.items():
            chosen = next(
                (d for d in versions if d.language.startswith("zh") == prefers_zh), versions[0]
            )
            participants.record_consent(
                self.session,
                staff,
                self.trial,
                code,
                document_id=document_id,
                version=version,
                language=chosen.language,
                signer_role=chosen.signer,
                signed_at=signed_at,
            )
        if not self.protocol.consents:
            participants.record_consent(
                self.session,
                staff,
                self.trial,
                code,
                document_id="consent",
                version="1.0",
                language="en",
                signer_role="participant",
                signed_at=signed_at,
            )

    def _save(
        self,
        staff: Actor,
        code: str,
        visit_code: str,
        form_code: str,
        subject: Subject,
        overrides: Mapping[str, object],
        on: datetime.date,
        *,
        repeat_index: int = 1,
    ) -> None:
        form = self.protocol.form(form_code)
        values = form_values(form, subject.rng, on, overrides)
        warnings = self._warning_ids(form)
        if form.respondent == "participant" and not form.repeating:
            link = epro.issue_link(
                self.session,
                staff,
                self.trial,
                code,
                visit=visit_code,
                form=form_code,
                sender=epro.LogSender(),
            )
            participant = self.session.get(Participant, link.link.participant_id)
            assert participant is not None
            device_time = datetime.datetime.combine(
                on, datetime.time(19, subject.rng.randint(0, 59)), tzinfo=datetime.UTC
            ).isoformat()
            forms.save_form(
                self.session,
                epro.participant_actor(participant, link.link),
                self.trial,
                code,
                visit_code,
                form_code,
                values,
                submit=True,
                acknowledged=warnings,
                device_time=device_time,
                today=on,
            )
            epro.complete_link(self.session, link.link.id)
        else:
            writer = staff
            if form.respondent == "outcome_assessor":
                site_id = self.session.scalars(
                    select(Participant.site_id).where(
                        Participant.trial_id == self.trial.id, Participant.subject_code == code
                    )
                ).one()
                writer = self.assessors[site_id]
            forms.save_form(
                self.session,
                writer,
                self.trial,
                code,
                visit_code,
                form_code,
                values,
                submit=True,
                acknowledged=warnings,
                repeat_index=repeat_index,
                today=on,
            )
        self.counts.forms_submitted += 1

    @staticmethod
    def _warning_ids(form: FormDef) -> tuple[str, ...]:
        checks = [*form.checks, *(c for f in form.fields for c in f.checks)]
        return tuple(c.id for c in checks if c.severity == "warning")

    def _visit_on(self, subject: Subject, visit: VisitDef) -> datetime.date:
        planned = subject.randomized_on + datetime.timedelta(days=visit.day)
        shift = round(subject.rng.triangular(-visit.window_before, visit.window_after, 0))
        return planned + datetime.timedelta(days=shift)

    def _follow(self, staff: Actor, code: str, subject: Subject) -> Iterator[datetime.date]:
        """Hold the follow-up visits that fall before `today` (each on its date), then AEs,
        device data (the day after the last one sent) and dropout."""
        session, trial = self.session, self.trial
        done: list[tuple[VisitDef, datetime.date]] = []
        dropped = False
        for number, visit in enumerate(self.follow_up):
            on = subject.randomized_on if number == 0 else self._visit_on(subject, visit)
            if on >= self.today:
                break
            if subject.dropout_after is not None and number > subject.dropout_after:
                dropped = True
                break
            is_last = number == len(self.follow_up) - 1
            if number > 0 and not is_last and subject.rng.random() < MISSED_VISIT_RATE:
                continue
            yield on
            fraction = max(0.0, visit.day / self.last_day)
            values = self.profile.visit(subject, visit, fraction, on)
            self._rescue(subject, on, fraction)
            for form_code in visit.forms:
                if self.eos_form is not None and form_code == self.eos_form.id:
                    values = {**values, **self.profile.end_of_study(subject, "completed", on)}
                self._save(staff, code, visit.id, form_code, subject, values, on)
            participants.record_visit_date(
                session, staff, trial, code, visit.id, on, reanchor=number == 0
            )
            done.append((visit, on))
        if not done:
            return
        self._adverse_events(staff, code, subject, done)
        end_on = done[-1][1]
        if self.protocol.device_streams:
            # sent by the app up to the day before today: ingested the morning after the last
            yield min(end_on, self.today - datetime.timedelta(days=1)) + datetime.timedelta(days=1)
            self._device_data(code, subject, end_on)
        if dropped:
            self._flush_devices()
            yield from self._withdraw(staff, code, subject, done)

    def _rescue(self, subject: Subject, on: datetime.date, fraction: float) -> None:
        if not isinstance(self.profile, DiabetesProfile) or "rescue_on" in subject.traits:
            return
        if fraction <= 0:
            return
        hba1c = self.profile.hba1c(subject, fraction)
        chance = (0.05 if subject.is_active_arm else 0.12) + (0.25 if hba1c > 9.0 else 0.0)
        if subject.rng.random() < chance * fraction:
            subject.traits["rescue_on"] = on - datetime.timedelta(days=subject.rng.randint(3, 40))

    def _adverse_events(
        self, staff: Actor, code: str, subject: Subject, done: list[tuple[VisitDef, datetime.date]]
    ) -> None:
        if self.ae_form is None or len(done) < 2:
            return
        start, end = done[0][1], done[-1][1]
        expected = self.profile.ae_rate * (end - start).days / max(self.last_day, 1)
        n_events = _poisson(subject.rng, expected)
        for index in range(1, n_events + 1):
            onset = start + datetime.timedelta(
                days=subject.rng.randint(1, max(1, (end - start).days))
            )
            reported = next((v for v, d in done if d >= onset), done[-1][0])
            reported_on = next((d for v, d in done if v.id == reported.id), end)
            serious = subject.rng.random() < 0.08
            values = self.profile.adverse_event(subject, onset, serious)
            values.update(self._ae_grades(subject.rng, serious))
            if any(f.id == "ae_resolved_on" for f in self.ae_form.fields):
                resolved = onset + datetime.timedelta(days=subject.rng.randint(1, 21))
                values["ae_resolved_on"] = min(resolved, reported_on).isoformat()
                if any(f.id == "ae_outcome" for f in self.ae_form.fields):
                    values["ae_outcome"] = "recovered"
            self._save(
                staff,
                code,
                reported.id,
                self.ae_form.id,
                subject,
                values,
                max(onset, reported_on),
                repeat_index=index,
            )
            self.counts.adverse_events += 1

    def _ae_grades(self, rng: random.Random, serious: bool) -> Values:
        """Severity and relatedness from the form's own choices (mostly the first, mildest)."""
        assert self.ae_form is not None
        grades: Values = {}
        for field_def in self.ae_form.fields:
            codes = [c.code for c in field_def.choices]
            if field_def.id == "ae_severity" and codes:
                grades[field_def.id] = (
                    codes[-1] if serious else rng.choice(codes[:1] * 3 + codes[1:2])
                )
            elif field_def.id == "ae_related" and codes:
                grades[field_def.id] = rng.choice(codes[:1] * 6 + codes[1:2] * 3 + codes[2:3])
        return grades

    def _withdraw(
        self, staff: Actor, code: str, subject: Subject, done: list[tuple[VisitDef, datetime.date]]
    ) -> Iterator[datetime.date]:
        status, reason = subject.rng.choice(WITHDRAWAL_REASONS)
        last_on = done[-1][1] + datetime.timedelta(days=subject.rng.randint(7, 30))
        last_on = min(last_on, self.today)
        yield last_on
        if self.eos_form is not None:
            choices = {
                c.code for f in self.eos_form.fields if f.id == "eos_status" for c in f.choices
            }
            eos_status = (
                status if status in choices else ("withdrew" if "withdrew" in choices else None)
            )
            if eos_status is not None:
                visit_code = self.protocol.visits_of_form(self.eos_form.id)[-1]
                values = self.profile.end_of_study(subject, eos_status, last_on)
                self._save(staff, code, visit_code, self.eos_form.id, subject, values, last_on)
        participants.withdraw_participant(self.session, staff, self.trial, code, reason)
        self.counts.withdrawn += 1

    def _device_data(self, code: str, subject: Subject, end_on: datetime.date) -> None:
        streams = self.protocol.device_streams
        if not streams:
            return
        zone = datetime.timezone(datetime.timedelta(hours=8))
        days = (min(end_on, self.today - datetime.timedelta(days=1)) - subject.randomized_on).days
        for day in range(max(0, days) + 1):
            on = subject.randomized_on + datetime.timedelta(days=day)
            for stream in streams:
                if stream.cadence == "daily":
                    value = self.profile.daily_usage(subject, stream.id, day)
                    at = datetime.datetime.combine(on, datetime.time(21, 0), tzinfo=zone)
                    self._record(code, stream.id, at, value, stream.unit, stream.min, stream.max)
                elif subject.rng.random() < 0.4:
                    hba1c = subject.traits.get("hba1c", 8.0)
                    value = max(3.0, subject.rng.gauss(1.59 * float(hba1c) - 2.59, 1.5))
                    at = datetime.datetime.combine(
                        on, datetime.time(7, subject.rng.randint(0, 59)), tzinfo=zone
                    )
                    self._record(
                        code, stream.id, at, round(value, 1), stream.unit, stream.min, stream.max
                    )
        if len(self.device_batch) >= DEVICE_BATCH:
            self._flush_devices()

    def _record(
        self,
        code: str,
        stream: str,
        at: datetime.datetime,
        value: float,
        unit: str,
        low: float | None,
        high: float | None,
    ) -> None:
        if low is not None:
            value = max(low, value)
        if high is not None:
            value = min(high, value)
        self.device_batch.append(
            {
                "subject": code,
                "stream": stream,
                "time": at.isoformat(),
                "value": round(value, 1),
                "unit": unit,
                "source": "dtx-app-sim",
            }
        )

    def _flush_devices(self) -> None:
        if not self.device_batch:
            return
        result = devices.ingest_observations(
            self.session, self.data_manager, self.trial, self.device_batch
        )
        self.counts.device_records += result.n_accepted
        self.device_batch = []


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's Poisson sampler (small means only)."""
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def insert_enrolled_mci_participants(
    session: Session, actor: Actor, trial: Trial, sites: Sequence[Site], n: int
) -> list[str]:
    """Insert n participants of the MCI example trial straight into the enrolled state, each with
    a submitted screening MoCA (the stratification factor), every row audited; commit every 500.

    The fast path of load tests and benchmarks, which need many participants ready to randomize
    or to fill forms for: screening, consent and eligibility are skipped (`populate_trial` goes
    through them). Returns the subject codes (``SITE-00000``), sites taken in turn.
    """
    subjects: list[str] = []
    _, protocol = active_protocol(session, trial)
    documents = {d.id: d for d in reversed(protocol.consents)}  # one language per document
    for i in range(n):
        site = sites[i % len(sites)]
        participant = Participant(
            trial_id=trial.id,
            site_id=site.id,
            subject_code=f"{site.code}-{i:05d}",
            status="enrolled",
            protocol_version_id=trial.active_protocol_version_id,
            consented_at=utcnow(),
        )
        session.add(participant)
        audit.record_create(session, actor, "participant.screen", participant)
        for document in documents.values():  # data entry needs the consents (forms.save_form)
            consent = Consent(
                participant_id=participant.id,
                document_id=document.id,
                consent_version=document.version,
                language=document.language,
                signer_role=document.signer,
            )
            session.add(consent)
            audit.record_create(session, actor, "consent.sign", consent, trial_id=trial.id)
        record = FormRecord(
            participant_id=participant.id,
            form_code="moca",
            status="submitted",
            data={"moca_total": 18 + (i * 7) % 8},
        )
        session.add(record)
        audit.record_create(session, actor, "form.submit", record, trial_id=trial.id)
        subjects.append(participant.subject_code)
        if i % 500 == 499:
            session.commit()
    session.commit()
    return subjects


def populate_trial(
    session: Session,
    trial: Trial,
    *,
    n_participants: int = 240,
    seed: int = 20261123,
    today: datetime.date | None = None,
    progress: ProgressCallback | None = None,
) -> SimulationSummary:
    """Drive `n_participants` simulated people through the trial's services; return counts.

    Site investigators and a data manager are created when missing (random passwords, never
    shown). About 15% fail screening on a criterion, ~10% of those randomized withdraw, ~5% of
    follow-up visits are missed; visits fall in their windows around a simulated randomization
    date within the ~18 months before `today`, sites opening one after another.

    Everyone's steps (screening, randomization, each visit, device data, withdrawal) are taken
    in calendar order under a simulated clock (``db.simulated_clock``), so what the services
    stamp (enrolment and randomization times, submissions, the audit trail) falls on the
    simulated dates, in order. Deterministic for a seed, apart from the random parts the
    services add themselves (activation codes, randomization secret).
    """
    today = today or datetime.date.today()
    _, protocol = active_protocol(session, trial)
    run = _Run(session, trial, protocol, random.Random(seed), today)
    subjects = [run.subject(index, n_participants) for index in range(n_participants)]
    zones = {s.id: site_zone(s) for s in run.sites}

    def step_at(subject: Subject, on: datetime.date) -> datetime.datetime:
        local = datetime.datetime.combine(on, STEP_TIME, tzinfo=zones[subject.site.id])
        return local.astimezone(datetime.UTC)

    finished = 0
    with simulated_clock() as clock:
        # (UTC time of the next step, subject index, that subject's steps)
        queue: list[tuple[datetime.datetime, int, Iterator[datetime.date]]] = []
        for subject in subjects:
            steps = run.simulate(subject)
            heapq.heappush(queue, (step_at(subject, next(steps)), subject.index, steps))
        while queue:
            at, index, steps = heapq.heappop(queue)
            clock.advance_to(at)
            following = next(steps, None)
            if following is not None:
                heapq.heappush(queue, (step_at(subjects[index], following), index, steps))
                continue
            finished += 1
            if progress is not None:
                progress(finished, n_participants)
        run._flush_devices()
    return SimulationSummary(**vars(run.counts))
