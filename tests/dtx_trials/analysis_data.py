"""Fill a loaded example trial with analysable data: synthetic values written as audited
rows, participants randomized through the real randomization service."""

from __future__ import annotations

from sqlalchemy import select

from analysis.simulation import simulate_trial_data
from dtx_trials.extensions import db
from dtx_trials.models import FormRecord, Participant, Site, Trial, Visit
from dtx_trials.models.users import Role
from dtx_trials.services import audit, protocols, randomization
from dtx_trials.services.access import Actor, Grant
from tests.dtx_trials.trial_flow import LIBRARY, library_code
from tests.helpers import CLI, KNOWN_SECRET, fix_randomization_secret


def populated_trial(
    filename: str, n: int, seed: int = 3, secret: str = KNOWN_SECRET
) -> Trial:
    """The trial of a library protocol with n simulated participants; its randomization secret
    is fixed before any of them is randomized, so that every allocation, and whatever depends on
    them (an analysis's fit, an arm's count), is the same in every run: a test on a trial
    randomized with a fresh secret passed or failed with its draw."""
    protocols.load_library_file(db.session, CLI, LIBRARY / filename)
    trial = db.session.scalars(select(Trial).where(Trial.code == library_code(filename))).one()
    fix_randomization_secret(trial.id, secret)
    _, protocol = protocols.active_protocol(db.session, trial)
    sites = list(
        db.session.scalars(select(Site).where(Site.trial_id == trial.id).order_by(Site.code))
    )
    data = simulate_trial_data(protocol, n, seed=seed)
    investigator = Actor(
        user_id=None,
        username="inv",
        printed_name="Investigator",
        via="cli",
        grants=(Grant(trial.id, None, Role.INVESTIGATOR),),
    )
    form_of = {f.id: form.id for form in protocol.forms for f in form.fields}
    for i, subject in enumerate(data.subjects):
        site = sites[i % len(sites)]
        p = Participant(
            trial_id=trial.id,
            site_id=site.id,
            subject_code=f"{site.code}-{i // len(sites) + 1:04d}",  # numbered as the app does
            status="enrolled" if subject.arm else "screen_failed",
            protocol_version_id=trial.active_protocol_version_id,
            full_name=f"Name {i}",
            phone=f"1380000{i:04d}",
        )
        db.session.add(p)
        audit.record_create(db.session, CLI, "participant.screen", p)
        for visit_code, values in subject.visits.items():
            visit = Visit(
                participant_id=p.id,
                visit_code=visit_code,
                actual_on=subject.visit_dates.get(visit_code),
                status="done",
            )
            db.session.add(visit)
            audit.record_create(db.session, CLI, "visit.open", visit, trial_id=trial.id)
            by_form: dict[str, dict[str, object]] = {}
            for field_id, value in values.items():
                by_form.setdefault(form_of[field_id], {})[field_id] = value
            for form_id, form_values in by_form.items():
                record = FormRecord(
                    participant_id=p.id,
                    visit_id=visit.id,
                    form_code=form_id,
                    status="submitted",
                    data=form_values,
                )
                db.session.add(record)
                audit.record_create(db.session, CLI, "form.submit", record, trial_id=trial.id)
        db.session.commit()
        if subject.arm:
            randomization.randomize_participant(db.session, investigator, trial, p.subject_code)
    return trial
