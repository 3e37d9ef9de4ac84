"""The trial simulator drives the real services: counts add up, every randomized participant
has an allocation, the audit trail verifies, stored forms are valid, visits fall in their
windows, and the simulated treatment effects show in the stored data."""

from __future__ import annotations

import datetime
import json
import os
import random
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import func, select

from dtx_trials.extensions import db
from dtx_trials.models import (
    Allocation,
    AuditEvent,
    DeviceObservation,
    FormRecord,
    Participant,
    Site,
    Trial,
    Visit,
)
from dtx_trials.services import protocols
from dtx_trials.services.integrity import check_integrity
from dtx_trials.services.protocols import active_protocol
from dtx_trials.services.simulation import (
    PROFILES,
    SimulationSummary,
    Subject,
    populate_trial,
    split_total,
)
from ecrf.checks import evaluate_form
from protocols.loader import load_protocol
from tests.helpers import CLI, fix_randomization_secret

LIBRARY = Path(__file__).resolve().parents[2] / "protocols" / "library"
TODAY = datetime.date(2026, 11, 2)
OPEN = ("screening", "consented", "eligible")


def _load(filename: str) -> Trial:
    protocols.load_library_file(db.session, CLI, LIBRARY / filename)
    text = (LIBRARY / filename).read_text(encoding="utf-8")
    code = text.split("\ncode: ", 1)[1].split("\n", 1)[0].strip()
    trial = db.session.scalars(select(Trial).where(Trial.code == code)).one()
    # a known randomization secret makes the allocations, and so the whole run, reproducible
    fix_randomization_secret(trial.id)
    return trial


def _count(stmt: object) -> int:
    return int(db.session.scalar(stmt) or 0)  # type: ignore[call-overload]


def _changes(trial: Trial, field: str, base_visit: str, visit: str) -> dict[str, list[float]]:
    """Per arm, the change of a field between two visits, from the stored form records."""
    arms = dict(
        db.session.execute(
            select(Allocation.participant_id, Allocation.arm_code).where(
                Allocation.trial_id == trial.id
            )
        ).all()
    )
    values: dict[tuple[int, str], dict[str, object]] = defaultdict(dict)
    for record, code in db.session.execute(
        select(FormRecord, Visit.visit_code)
        .join(Visit, Visit.id == FormRecord.visit_id)
        .join(Participant, Participant.id == FormRecord.participant_id)
        .where(Participant.trial_id == trial.id, Visit.visit_code.in_((base_visit, visit)))
    ):
        values[(record.participant_id, code)].update(record.data or {})
    changes: dict[str, list[float]] = defaultdict(list)
    for participant_id, arm in arms.items():
        before = values.get((participant_id, base_visit), {}).get(field)
        after = values.get((participant_id, visit), {}).get(field)
        if isinstance(before, int | float) and isinstance(after, int | float):
            changes[arm].append(float(after) - float(before))
    return changes


def _check_invariants(trial: Trial, summary: SimulationSummary) -> None:
    in_trial = Participant.trial_id == trial.id
    by_status = dict(
        db.session.execute(
            select(Participant.status, func.count()).where(in_trial).group_by(Participant.status)
        ).all()
    )
    still_screening = sum(by_status.get(s, 0) for s in OPEN)
    assert summary.screened == sum(by_status.values())
    assert summary.screened == summary.screen_failed + summary.enrolled + still_screening
    assert summary.screen_failed == by_status.get("screen_failed", 0)
    assert 0.05 <= summary.screen_failed / summary.screened <= 0.35
    assert summary.withdrawn == by_status.get("withdrawn", 0)
    assert summary.enrolled == _count(
        select(func.count())
        .select_from(Participant)
        .where(in_trial, Participant.enrolled_at.is_not(None))
    )
    # every randomized participant has exactly one allocation, and no one else has any
    randomized = set(
        db.session.scalars(
            select(Participant.id).where(in_trial, Participant.randomized_at.is_not(None))
        )
    )
    allocated = set(
        db.session.scalars(select(Allocation.participant_id).where(Allocation.trial_id == trial.id))
    )
    assert randomized == allocated and len(randomized) == summary.randomized > 0
    # withdrawals carry their reason
    for participant in db.session.scalars(
        select(Participant).where(in_trial, Participant.status == "withdrawn")
    ):
        assert participant.withdrawal_reason
    records = list(db.session.scalars(select(FormRecord).join(Participant).where(in_trial)))
    assert summary.forms_submitted == len(records)
    assert all(r.status == "submitted" for r in records)
    assert summary.adverse_events == sum(r.form_code == "adverse_events" for r in records)
    assert summary.adverse_events > 0
    assert summary.device_records == _count(
        select(func.count())
        .select_from(DeviceObservation)
        .where(DeviceObservation.trial_id == trial.id)
    )
    assert summary.device_records > 0
    # stored values pass the form engine again (they went through save_form)
    _, protocol = active_protocol(db.session, trial)
    for record in records:
        form = protocol.form(record.form_code)
        entered = {
            f.id: record.data[f.id]
            for f in form.fields
            if f.type != "calculated" and f.id in (record.data or {})
        }
        evaluation = evaluate_form(form, entered, today=TODAY, submit=True)
        assert evaluation.is_valid, (record.form_code, evaluation.errors)
        assert evaluation.values == record.data  # derived values as the engine computes them
    # visits of randomized participants took place inside their (re-anchored) windows
    visits = list(
        db.session.scalars(
            select(Visit).join(Participant).where(in_trial, Visit.actual_on.is_not(None))
        )
    )
    assert visits
    for visit in visits:
        assert visit.actual_on is not None and visit.actual_on < TODAY
        if visit.window_start_on is not None and visit.window_end_on is not None:
            assert visit.window_start_on <= visit.actual_on <= visit.window_end_on, visit.visit_code
    # ePRO answers were written by the participant through a link, visit dates are audited
    actors = set(
        db.session.scalars(
            select(AuditEvent.actor_role).where(
                AuditEvent.trial_id == trial.id, AuditEvent.action == "form.submit"
            )
        )
    )
    assert {"investigator", "participant"} <= actors
    assert _count(
        select(func.count())
        .select_from(AuditEvent)
        .where(AuditEvent.trial_id == trial.id, AuditEvent.action == "visit.date")
    ) == len(visits)
    # calendar time (issue #22): the services stamped the simulated dates, not the run's -
    # enrolment spreads over months (a curve on the dashboard, not a vertical line), each
    # randomization falls on its baseline visit's (site-local) day, the trail is in time order
    first_follow_up = next(v.id for v in protocol.schedule.visits if v.day >= 0)
    enrolled = sorted(
        at.date()
        for at in db.session.scalars(
            select(Participant.enrolled_at).where(in_trial, Participant.enrolled_at.is_not(None))
        )
        if at is not None
    )
    assert enrolled[-1] < TODAY and (enrolled[-1] - enrolled[0]).days > 60
    for randomized_at, baseline_on, zone in db.session.execute(
        select(Participant.randomized_at, Visit.actual_on, Site.timezone)
        .join(Visit, Visit.participant_id == Participant.id)
        .join(Site, Site.id == Participant.site_id)
        .where(in_trial, Visit.visit_code == first_follow_up, Visit.actual_on.is_not(None))
    ):
        assert randomized_at.astimezone(ZoneInfo(zone)).date() == baseline_on
    first_screen = db.session.scalar(
        select(func.min(AuditEvent.seq)).where(
            AuditEvent.trial_id == trial.id, AuditEvent.action == "participant.screen"
        )
    )
    stamps = list(
        db.session.scalars(
            select(AuditEvent.at)
            .where(AuditEvent.trial_id == trial.id, AuditEvent.seq >= first_screen)
            .order_by(AuditEvent.seq)
        )
    )
    assert stamps == sorted(stamps) and stamps[-1].date() <= TODAY
    report = check_integrity(db.session)
    assert report.ok, report.problems[:5]


@pytest.mark.parametrize(
    ("filename", "n"),
    [("cognitive_impairment.yaml", 16), ("pediatric_myopia.yaml", 16), ("type2_diabetes.yaml", 16)],
)
def test_populate_through_the_services(app: Flask, filename: str, n: int) -> None:
    trial = _load(filename)
    steps: list[tuple[int, int]] = []
    summary = populate_trial(
        db.session,
        trial,
        n_participants=n,
        seed=7,
        today=TODAY,
        progress=lambda s, t: steps.append((s, t)),
    )
    assert steps[-1] == (n, n) and len(steps) == n
    _check_invariants(trial, summary)
    if trial.code == "MYOPIA-DTX-01":
        al = _changes(trial, "al_right", "screening", "month_12")
        se = _changes(trial, "se_right", "screening", "month_12")
        assert mean(al["coaching"]) < mean(al["education"])
        assert mean(se["coaching"]) > mean(se["education"])  # less negative: slower progression
    if trial.code == "T2D-COACH-01":
        hba1c = _changes(trial, "hba1c_pct", "baseline", "week_24")
        assert mean(hba1c["app"]) < mean(hba1c["usual_care"]) < 0


def _subjects(n: int) -> list[Subject]:
    return [
        Subject(
            index=i,
            rng=random.Random(i),
            site=None,  # type: ignore[arg-type]
            screening_on=TODAY,
            randomized_on=TODAY,
            will_fail=False,
            still_screening=False,
            dropout_after=None,
            is_active_arm=i % 2 == 0,
        )
        for i in range(n)
    ]


def test_profiles_carry_the_specified_effects() -> None:
    """Large simulated samples straight from the value profiles (no database)."""
    schedule = {
        code: {v.id: v for v in load_protocol(path).schedule.visits}
        for path in LIBRARY.glob("*.yaml")
        for code in [load_protocol(path).code]
    }
    mci = PROFILES["MCI-COGTRAIN-01"]()
    changes: dict[bool, list[float]] = defaultdict(list)
    for subject in _subjects(2000):
        mci.traits(subject)
        week_24 = schedule["MCI-COGTRAIN-01"]["week_24"]
        base = sum(
            v for k, v in mci.visit(subject, week_24, 0.0, TODAY).items() if k.startswith("adas_q")
        )  # type: ignore[misc]
        end = sum(
            v for k, v in mci.visit(subject, week_24, 1.0, TODAY).items() if k.startswith("adas_q")
        )  # type: ignore[misc]
        changes[subject.is_active_arm].append(end - base)
    assert mean(changes[True]) - mean(changes[False]) == pytest.approx(-2.0, abs=0.5)
    sd = (sum((x - mean(changes[False])) ** 2 for x in changes[False]) / len(changes[False])) ** 0.5
    assert 4.5 <= sd <= 7.5

    myopia = PROFILES["MYOPIA-DTX-01"]()
    month_12 = schedule["MYOPIA-DTX-01"]["month_12"]
    se: dict[bool, list[float]] = defaultdict(list)
    al: dict[bool, list[float]] = defaultdict(list)
    for subject in _subjects(2000):
        myopia.traits(subject)
        values = myopia.visit(subject, month_12, 1.0, TODAY)
        se[subject.is_active_arm].append(float(values["se_right"]) - subject.traits["se_right"])  # type: ignore[arg-type]
        al[subject.is_active_arm].append(float(values["al_right"]) - subject.traits["al_right"])  # type: ignore[arg-type]
    assert mean(se[True]) == pytest.approx(-0.50, abs=0.05)
    assert mean(se[False]) == pytest.approx(-0.75, abs=0.05)
    assert mean(al[True]) == pytest.approx(0.20, abs=0.02)
    assert mean(al[False]) == pytest.approx(0.30, abs=0.02)

    t2d = PROFILES["T2D-COACH-01"]()
    week_24 = schedule["T2D-COACH-01"]["week_24"]
    hba1c: dict[bool, list[float]] = defaultdict(list)
    for subject in _subjects(2000):
        t2d.traits(subject)
        hba1c[subject.is_active_arm].append(
            float(t2d.visit(subject, week_24, 1.0, TODAY)["hba1c_pct"])  # type: ignore[arg-type]
            - subject.traits["hba1c"]
        )
    assert mean(hba1c[True]) == pytest.approx(-0.8, abs=0.1)
    assert mean(hba1c[False]) == pytest.approx(-0.3, abs=0.1)


def test_split_total_respects_item_maxima() -> None:
    rng = random.Random(3)
    maxima = [10, 5, 5, 10, 5, 5, 8, 12, 5, 5, 5, 5, 5]
    for total in (0, 1, 17, 40, 85, 90, -3):
        items = split_total(total, maxima, rng)
        assert sum(items) == max(0, min(total, 85))
        assert all(0 <= item <= top for item, top in zip(items, maxima, strict=True))


def test_dtx_demo_writes_database_summary_report_and_exports(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DTX_INSTANCE_PATH": str(tmp_path / "instance"),
        "DTX_ARGON2_TIME_COST": "1",
        "DTX_ARGON2_MEMORY_KIB": "1024",
    }
    env.pop("DATABASE_URL", None)
    env.pop("DTX_FIELD_KEY", None)
    out = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dtx_trials",
            "demo",
            "--protocol",
            str(LIBRARY / "type2_diabetes.yaml"),
            "--participants",
            "8",
            "--out",
            str(out),
        ],
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "T2D-COACH-01.summary.json").read_text(encoding="utf-8"))
    assert summary["counts"]["screened"] == 8
    assert (out / "demo.sqlite").exists()
    assert summary["export_files"] and all(Path(p).exists() for p in summary["export_files"])
    assert "analysis_run_id" in summary
    if summary["analysis_status"] == "succeeded":
        assert Path(summary["report_pdf"]).read_bytes().startswith(b"%PDF")
    assert "everything is under" in result.stdout
    # the demo database ships with accounts that can sign in, their passwords printed once
    for username in ("admin", "sponsor", "investigator", "statistician", "auditor"):
        assert re.search(rf"^\s+{username}\s+\S{{12,}}", result.stdout, re.MULTILINE)
    assert "sponsor_admin@T2D-COACH-01" in result.stdout


def test_dtx_demo_of_a_protocol_without_a_cdisc_mapping_writes_no_sdtm(tmp_path: Path) -> None:
    """SDTM comes only from a declared mapping: the demo of a protocol without one writes the
    other exports and says the package was not written (it neither guesses nor aborts)."""
    env = {
        **os.environ,
        "DTX_INSTANCE_PATH": str(tmp_path / "instance"),
        "DTX_ARGON2_TIME_COST": "1",
        "DTX_ARGON2_MEMORY_KIB": "1024",
    }
    env.pop("DATABASE_URL", None)
    env.pop("DTX_FIELD_KEY", None)
    out = tmp_path / "demo"
    protocol = LIBRARY / "adolescent_depression.yaml"
    assert "\ncdisc:" not in protocol.read_text(encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "dtx_trials", "demo", "--protocol", str(protocol),
         "--participants", "6", "--out", str(out)],
        env=env, text=True, capture_output=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "ADOL-DEP-01.summary.json").read_text(encoding="utf-8"))
    assert summary["cdisc_package"].startswith("not written: the protocol declares no cdisc")
    assert summary["export_files"] and not any(p.endswith(".xpt") for p in summary["export_files"])
    assert not (out / "ADOL-DEP-01" / "package").exists()


def test_simulated_clock_moves_forward_only_and_never_past_now() -> None:
    from dtx_trials.db import simulated_clock, utcnow

    past = datetime.datetime(2025, 3, 1, 2, 0, tzinfo=datetime.UTC)
    with simulated_clock() as clock:
        clock.advance_to(past)
        assert past <= utcnow() < past + datetime.timedelta(minutes=1)
        clock.advance_to(past - datetime.timedelta(days=30))  # never backwards
        assert utcnow() >= past
        clock.advance_to(datetime.datetime(2999, 1, 1, tzinfo=datetime.UTC))  # never ahead
        assert utcnow() <= datetime.datetime.now(datetime.UTC)
    assert utcnow() - datetime.datetime.now(datetime.UTC) < datetime.timedelta(seconds=1)
