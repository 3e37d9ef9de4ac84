"""Shared set-up for the trust-layer tests: anchoring on a temporary store, a trial with every
kind of regulated row made through the API, and tampering as a database administrator would
(inside a transaction that is rolled back after `verify` has looked at it)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from dtx_trials.anchors import DirectoryStore, generate_signing_key
from dtx_trials.extensions import db
from dtx_trials.models import Participant
from dtx_trials.services import analyses, checkpoints, integrity
from dtx_trials.services.audit import Problem
from tests.dtx_trials.trial_flow import (
    MCI_CODE,
    TrialStaff,
    api,
    enrolled_mci_participant,
    load_trial,
)
from tests.helpers import PASSWORD


@contextmanager
def anchoring(app: Flask, directory: Path, **settings: Any) -> Iterator[checkpoints.Anchoring]:
    """Enable checkpoints on `directory` with a fresh signing key for the duration."""
    key = directory.parent / f"{directory.name}-signing.key"
    generate_signing_key(key)
    saved = {k: app.config.get(k) for k in ("ANCHOR_DIR", "ANCHOR_SIGNING_KEY", *settings)}
    app.config.update(ANCHOR_DIR=str(directory), ANCHOR_SIGNING_KEY=str(key), **settings)
    try:
        configured = checkpoints.configure(app)
        assert configured is not None
        yield configured
    finally:
        app.config.update(saved)
        app.extensions.pop("dtx_anchoring", None)


@dataclass
class RegulatedTrial:
    staff: TrialStaff
    subject: str
    other_subject: str
    record_id: int


def regulated_trial(client: FlaskClient) -> RegulatedTrial:
    """A trial with a randomized participant, a signed form, an answered query, device data,
    an emergency unblinding and a queued analysis, all through the API."""
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    other = enrolled_mci_participant(client, staff)
    for who in (subject, other):
        api(client, staff["inv"], "POST", f"/participants/{who}/randomization", {}, 201)
    # a baseline three days before its planned day: a visit time and a protocol deviation
    earlier = datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=3)
    api(client, staff["inv"], "POST", f"/participants/{subject}/visits/baseline/date",
        {"date": earlier.isoformat(), "time": "10:00"}, 200)
    records = api(client, staff["inv"], "GET", f"/participants/{subject}/forms", None, 200)
    record = next(r for r in records if r["form_code"] == "moca")
    record_id = record["id"]
    api(
        client,
        staff["inv"],
        "POST",
        f"/records/{record_id}/sign",
        {"password": PASSWORD, "meaning": "responsibility", "expected_version": record["version"]},
        201,
    )
    query = api(
        client,
        staff["monitor"],
        "POST",
        f"/records/{record_id}/queries",
        {"field": "moca_raw", "text": "Please confirm the raw score"},
        201,
    )
    api(
        client, staff["inv"], "POST", f"/queries/{query['id']}/answer", {"answer": "Confirmed"}, 200
    )
    day = datetime.datetime.now(datetime.UTC).date()
    readings = [
        {
            "subject": subject,
            "stream": "training_minutes",
            "time": f"{(day - datetime.timedelta(days=d)).isoformat()}T08:00:00+08:00",
            "value": 20 + d,
            "unit": "min",
            "source": "cogtrain-android-2.3",
        }
        for d in range(3)
    ]
    response = client.post(
        f"/api/v1/trials/{MCI_CODE}/device-data", headers=staff["dm"].headers, json=readings
    )
    assert response.status_code == 200, response.get_json()
    api(
        client,
        staff["inv"],
        "POST",
        f"/participants/{other}/unblinding",
        {
            "password": PASSWORD,
            "reason": "SAE needing a treatment decision",
            "category": "serious_adverse_event",
        },
        200,
    )
    issued = api(
        client,
        staff["coord"],
        "POST",
        f"/participants/{subject}/epro-links",
        {"visit": "week_4", "form": "app_experience"},
        201,
    )
    assert client.get(urlsplit(str(issued["url"])).path).status_code == 303  # opened
    # a serious adverse event: the expedited-report clock starts (a safety event)
    sae = {"ae_term": "fracture", "ae_onset_on": day.isoformat(), "ae_severity": "severe",
           "ae_serious": "1", "ae_related": "not_related"}
    api(client, staff["inv"], "PUT",
        f"/participants/{subject}/visits/baseline/forms/adverse_events",
        {"values": sae, "submit": True}, 200)
    # its initial report and a follow-up with a changed causality assessment
    sae_id = api(client, staff["inv"], "GET", "/safety-events")[0]["id"]
    api(client, staff["inv"], "POST", f"/safety-events/{sae_id}/report",
        {"causality": "not_related", "expectedness": "unexpected", "narrative": "Fell."}, 200)
    api(client, staff["inv"], "POST", f"/safety-events/{sae_id}/follow-ups",
        {"causality": "possibly", "expectedness": "unexpected", "outcome": "recovering",
         "narrative": "Discharged."}, 201)
    # the AE term coded against a (synthetic) sponsor dictionary by the data manager
    from dtx_trials.services import accounts, coding

    manager = accounts.actor_for(db.session, staff["dm"].user, via="cli")
    coding.load_dictionary(db.session, manager, staff.trial, name="DTX-SYNTHETIC", version="1.0",
                           text="term,preferred_term,body_system\nfracture,Fracture,"
                                "Injury poisoning and procedural complications\n")
    assert api(client, staff["dm"], "POST", "/coding/auto", None, 200)["n_coded"] == 1
    # a remote consent signed on its link (code through the outbox) and countersigned
    remote = api(client, staff["inv"], "POST", "/participants",
                 {"site": "BJ01", "identifiers": {"phone": "13900002222"}}, 201)["subject_code"]
    link = api(client, staff["inv"], "POST", f"/participants/{remote}/econsent",
               {"document_id": "main_icf", "version": "1.0", "language": "en",
                "channel": "sms"}, 201)
    signer = client.application.test_client()
    path = urlsplit(str(link["url"])).path
    page = signer.get(path).get_data(as_text=True)
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    assert signer.post(f"{path}/code", data={"csrf_token": csrf}).status_code == 303
    from dtx_trials.models import Consent, Notification

    sms = db.session.scalars(select(Notification).where(Notification.kind == "econsent.code")).one()
    code = sms.body.rsplit(" ", 1)[1]
    signed = signer.post(f"{path}/sign",
                         data={"csrf_token": csrf, "typed_name": "Wang Fang", "code": code})
    assert signed.status_code == 303
    consent_id = db.session.scalars(select(Consent.id).where(Consent.method == "remote")).one()
    api(client, staff["inv"], "POST", f"/participants/{remote}/consents/{consent_id}/countersign",
        {"password": PASSWORD}, 200)
    stat = accounts.actor_for(db.session, staff["stat"].user, via="cli")
    analyses.request_analysis(db.session, stat, staff.trial)
    return RegulatedTrial(staff, subject, other, record_id)


def participant_id(subject: str) -> int:
    return int(
        db.session.scalars(select(Participant.id).where(Participant.subject_code == subject)).one()
    )


def problems_after(
    tamper: Callable[[Connection], None],
    *,
    trigger_on: bool = False,
    store: DirectoryStore | None = None,
    trusted: dict[str, bytes] | None = None,
) -> list[Problem]:
    """Run `tamper` as a database administrator (the audit trigger disabled unless
    `trigger_on`), verify what it left, then roll everything back."""
    db.session.remove()
    with db.engine.connect() as conn:
        outer = conn.begin()
        try:
            if conn.dialect.name == "postgresql" and not trigger_on:
                conn.execute(text("SET LOCAL session_replication_role = replica"))
            elif conn.dialect.name == "sqlite":
                conn.execute(text("PRAGMA defer_foreign_keys = ON"))
            tamper(conn)
            session = Session(bind=conn, join_transaction_mode="create_savepoint")
            try:
                problems = list(integrity.check_integrity(session).problems)
                if store is not None:
                    problems += checkpoints.verify_anchors(session, store, trusted or {}).problems
            finally:
                session.close()
        finally:
            outer.rollback()
    return problems
