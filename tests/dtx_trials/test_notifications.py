"""The notification outbox: an emergency unblinding e-mails the roles the protocol names,
through a real SMTP server, never with the arm; delivery is retried, audited and reported;
the outbox row commits or rolls back with its cause; RQ workers deliver and schedule retries."""

from __future__ import annotations

import base64
import datetime
import os
from typing import Any, ClassVar

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from dtx_trials.channels import (
    DeliveryError,
    OutgoingMessage,
    SmsChannel,
    SmtpChannel,
    channels_from_config,
)
from dtx_trials.crypto import cipher
from dtx_trials.db import transaction, utcnow
from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, Notification, Trial
from dtx_trials.services import audit, notifications, protocols, randomization
from dtx_trials.services.integrity import check_integrity
from protocols.loader import load_protocol
from tests import absent
from tests.dtx_trials.trial_flow import (
    LIBRARY,
    MCI_CODE,
    TrialStaff,
    api,
    enrolled_mci_participant,
    trial_staff,
)
from tests.helpers import CLI, PASSWORD
from tests.mail_server import LocalSmtpServer, free_port

# a queue of this run's own: suites running side by side on one Redis never share jobs
TEST_QUEUE = f"dtx-test-{os.getpid()}"


def _mci_staff(client: FlaskClient) -> TrialStaff:
    """The MCI trial with e-mail addresses on every account (two sites, each role once)."""
    protocols.load_library_file(db.session, CLI, LIBRARY / "cognitive_impairment.yaml")
    trial = db.session.scalars(select(Trial).where(Trial.code == MCI_CODE)).one()
    return trial_staff(client, trial, emails=True)


def _arm_terms() -> list[str]:
    """Every way the MCI protocol names an arm: codes, English and Chinese names."""
    protocol = load_protocol(LIBRARY / "cognitive_impairment.yaml")
    return sorted({t for a in protocol.arms for t in (a.code, a.name.en, a.name.zh) if t})


def test_emergency_unblinding_emails_the_named_roles_without_the_arm(
    app: Flask, client: FlaskClient
) -> None:
    """§1.7: sponsor and monitor at once, and (as MCI's protocol names them) the investigators
    of the participant's site; never the arm, not even when the reason names it."""
    staff = _mci_staff(client)
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    with LocalSmtpServer() as smtp:
        app.config.update(smtp.config)
        try:
            result = api(
                client,
                staff["inv"],
                "POST",
                f"/participants/{subject}/unblinding",
                {
                    "password": PASSWORD,
                    "reason": "Seizure; check whether Sham training or cogtrain was given",
                    "category": "serious_adverse_event",
                },
                200,
            )
            received = smtp.wait_for(3)
        finally:
            for key in smtp.config:
                app.config[key] = None
    assert result["arm_code"] in ("cogtrain", "sham")  # the investigator sees it, once
    recipients = sorted(address for tos, _ in received for address in tos)
    assert recipients == ["inv@example.org", "monitor@example.org", "sponsor@example.org"]
    for _, message in received:
        text = message.as_string()
        assert f"Emergency unblinding of participant {subject}" in message["Subject"]
        body = message.get_content()
        reason = "Reason: Seizure; check whether [arm withheld] training or [arm withheld] was"
        assert reason in body
        assert "Category: serious_adverse_event" in body and "Inv (investigator)" in body
        searched = text.replace(MCI_CODE, "<trial>").lower()  # the trial code contains an arm code
        for term in _arm_terms():
            assert term.lower() not in searched, term
        assert message["Message-ID"].startswith("<dtx-notification-")

    rows = client.get(
        f"/api/v1/trials/{MCI_CODE}/notifications", headers=staff["sponsor"].headers
    ).get_json()
    assert sorted((r["recipient_role"], r["status"], r["attempts"]) for r in rows) == [
        ("investigator", "sent", 1),
        ("monitor", "sent", 1),
        ("sponsor_admin", "sent", 1),
    ]
    assert all(r["kind"] == "emergency_unblinding" and r["sent_at"] for r in rows)
    assert not any("body" in r or "address" in r or "subject" in r for r in rows)
    for who, status in (("auditor", 200), ("monitor", 403), ("inv", 403), ("stat", 403)):
        response = client.get(
            f"/api/v1/trials/{MCI_CODE}/notifications", headers=staff[who].headers
        )
        assert response.status_code == status, who
    actions = [
        e.action
        for e in db.session.scalars(select(AuditEvent).order_by(AuditEvent.chain, AuditEvent.seq))
    ]
    assert actions.count("notification.queued") == 3 and actions.count("notification.sent") == 3
    # the queued events sit right after the unblinding, in the same transaction
    unblinding = actions.index("randomization.emergency_unblinding")
    assert actions[unblinding + 2 : unblinding + 5] == ["notification.queued"] * 3
    assert check_integrity(db.session, staff.trial.id).ok
    # the trail (read by the blinded sponsor, monitors, auditors) and the unblindings list hold
    # the reason as the notice shows it; another site's investigator sees no event of this
    # site (before: the reason in clear in both, and every site's events in the list)
    redacted = "Seizure; check whether [arm withheld] training or [arm withheld] was given"
    reasons = set(db.session.scalars(select(AuditEvent.reason).where(AuditEvent.action.in_(
        ["randomization.emergency_unblinding", "participant.unblinded"]))))
    assert reasons == {redacted}
    for who in ("monitor", "sponsor", "auditor", "inv"):
        listed = api(client, staff[who], "GET", "/unblindings", None, 200)
        assert [(e["subject_code"], e["reason"]) for e in listed] == [(subject, redacted)], who
    assert api(client, staff["inv2"], "GET", "/unblindings", None, 200) == []
    # the reason as signed is kept, encrypted with the field key, opaque to the trail's readers
    event = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "randomization.emergency_unblinding")).one()
    kept = next(c["new"] for c in event.changes if c["field"] == "reason_as_signed_encrypted")
    assert "cogtrain" not in kept.lower() and "sham" not in kept.lower()
    assert cipher().decrypt(base64.b64decode(kept), "audit.unblinding_reason") == (
        "Seizure; check whether Sham training or cogtrain was given")


def test_an_arm_is_blacked_out_as_a_word_never_inside_one() -> None:
    """Arm code "app" (type 2 diabetes) is blacked out as a word, not inside "appendicitis";
    a Chinese arm name wherever it stands."""
    t2d = load_protocol(LIBRARY / "type2_diabetes.yaml")
    assert randomization.redact_arms(
        t2d, "Suspected appendicitis; is it the app? 指导应用加常规治疗组") == (
        "Suspected appendicitis; is it the [arm withheld]? [arm withheld]组")


def test_a_protocol_without_the_key_notifies_sponsor_and_monitor(app: Flask) -> None:
    """T2D names no roles: the spec default (sponsor admin, monitor) applies; an open-label
    protocol notifies nobody."""
    t2d = load_protocol(LIBRARY / "type2_diabetes.yaml")
    assert t2d.blinding.unblinding_notify is None
    assert t2d.blinding.roles_notified_of_unblinding == ("sponsor_admin", "monitor")
    mci = load_protocol(LIBRARY / "cognitive_impairment.yaml")
    assert mci.blinding.roles_notified_of_unblinding == ("sponsor_admin", "monitor", "investigator")


def _queue_one(address: str | None, trial_id: int | None = None) -> int:
    with transaction(db.session):
        row = notifications.enqueue(
            db.session,
            CLI,
            trial_id=trial_id,
            kind="test",
            channel="email",
            address=address,
            subject="Test notice",
            body="Nothing about any arm.",
        )
    return row.id


def test_transient_failures_are_retried_with_backoff_then_delivered(app: Flask) -> None:
    port = free_port()  # nothing listens here yet
    channels = channels_from_config(
        {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": port, "SMTP_SENDER": "dtx@example.org"}
    )
    notification_id = _queue_one("someone@example.org")
    start = utcnow()
    report = notifications.deliver_pending(db.session, channels, now=start)
    assert (report.sent, report.retrying, report.failed, report.waiting) == (0, 1, 0, 1)
    row = db.session.get(Notification, notification_id)
    assert row is not None and row.status == "pending" and row.attempts == 1
    assert row.next_attempt_at == start + datetime.timedelta(minutes=1)
    assert row.last_error == "SMTP server unreachable: ConnectionRefusedError"
    # not due yet: nothing is attempted
    assert notifications.deliver_pending(db.session, channels, now=start).retrying == 0
    with LocalSmtpServer(port=port) as smtp:
        later = start + datetime.timedelta(minutes=2)
        report = notifications.deliver_pending(db.session, channels, now=later)
        assert report.sent == 1 and report.waiting == 0
        (tos, message), = smtp.wait_for(1)
    assert tos == ["someone@example.org"] and message["Subject"] == "Test notice"
    db.session.remove()
    row = db.session.get(Notification, notification_id)
    assert row is not None and (row.status, row.attempts, row.last_error) == ("sent", 2, None)
    events = list(
        db.session.scalars(
            select(AuditEvent).where(AuditEvent.entity_type == "notification").order_by(
                AuditEvent.id
            )
        )
    )
    assert [e.action for e in events] == [
        "notification.queued", "notification.retry", "notification.sent"
    ]
    assert events[1].reason == "SMTP server unreachable: ConnectionRefusedError"
    assert audit.verify(db.session).ok


def test_a_refused_recipient_fails_at_once_and_errors_never_hold_the_address(app: Flask) -> None:
    with LocalSmtpServer(refuse=True) as smtp:
        channels = channels_from_config(smtp.config)
        notification_id = _queue_one("nobody@example.org")
        report = notifications.deliver_pending(db.session, channels)
        assert smtp.messages == []
    assert (report.sent, report.failed) == (0, 1)
    row = db.session.get(Notification, notification_id)
    assert row is not None and (row.status, row.attempts) == ("failed", 1)
    assert row.last_error == "SMTP refused the recipient (550)"
    assert "nobody@example.org" not in (row.last_error or "")


def test_attempts_are_bounded(app: Flask) -> None:
    channels = channels_from_config(
        {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": free_port(), "SMTP_SENDER": "dtx@example.org"}
    )
    notification_id = _queue_one("someone@example.org")
    now = utcnow()
    for _ in range(notifications.MAX_ATTEMPTS + 2):
        notifications.deliver_pending(db.session, channels, now=now)
        now += datetime.timedelta(hours=3)
    row = db.session.get(Notification, notification_id)
    assert row is not None and (row.status, row.attempts) == ("failed", notifications.MAX_ATTEMPTS)


def test_a_recipient_without_an_address_is_undeliverable(app: Flask) -> None:
    notification_id = _queue_one(None)
    row = db.session.get(Notification, notification_id)
    assert row is not None and row.status == "undeliverable"
    assert row.last_error == "no email address for the recipient"
    with LocalSmtpServer() as smtp:
        report = notifications.deliver_pending(db.session, channels_from_config(smtp.config))
        assert report.sent == 0 and smtp.messages == []


def test_the_outbox_row_rolls_back_with_its_cause(app: Flask) -> None:
    with pytest.raises(RuntimeError, match="cause failed"), transaction(db.session):
        notifications.enqueue(
            db.session, CLI, trial_id=None, kind="test", channel="email",
            address="a@example.org", subject="s", body="b",
        )
        raise RuntimeError("cause failed")
    db.session.remove()
    assert db.session.scalar(select(func.count()).select_from(Notification)) == 0
    assert not db.session.info.get("dtx_notifications_enqueued")


class RecordingSms:
    """An SMS gateway adapter as a deployment writes one (`DTX_SMS_PROVIDER`)."""

    sent: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, config: object) -> None:
        self.config = config

    def send_sms(self, phone: str, text: str) -> str | None:
        if phone.startswith("+000"):
            raise DeliveryError("number does not exist", permanent=True)
        RecordingSms.sent.append((phone, text))
        return f"sms-{len(RecordingSms.sent)}"


def sms_provider(config: object) -> RecordingSms:
    return RecordingSms(config)


def test_sms_channel_uses_the_configured_provider(app: Flask) -> None:
    provider = "tests.dtx_trials.test_notifications:sms_provider"
    channels = channels_from_config({"SMS_PROVIDER": provider})
    channel = channels["sms"]
    assert isinstance(channel, SmsChannel)
    RecordingSms.sent.clear()
    assert channel.send(OutgoingMessage(1, "+8613900001111", "Visit reminder", "b")) == "sms-1"
    assert RecordingSms.sent == [("+8613900001111", "Visit reminder")]
    with transaction(db.session):
        row = notifications.enqueue(
            db.session, CLI, trial_id=None, kind="test", channel="sms",
            address="+0001", subject="Reminder", body="",
        )
    row_id = row.id
    report = notifications.deliver_pending(db.session, channels)
    assert report.failed == 1
    db.session.remove()
    failed = db.session.get(Notification, row_id)
    assert failed is not None and failed.status == "failed"
    assert failed.last_error == "number does not exist"
    with pytest.raises(ValueError, match=r"package\.module:factory"):
        channels_from_config({"SMS_PROVIDER": "no_colon_here"})
    with pytest.raises(ValueError, match="sender"):
        SmtpChannel("127.0.0.1", 25, "")


def _clear_scheduled(queue: Any) -> None:
    from rq.registry import ScheduledJobRegistry

    registry = ScheduledJobRegistry(queue=queue)
    for job_id in registry.get_job_ids():
        registry.remove(job_id, delete_job=True)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_rq_worker_delivers_and_schedules_the_retry(
    app: Flask, client: FlaskClient, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With DTX_QUEUE_URL the commit only enqueues a job; a worker delivers, and a failed
    attempt schedules the next run at the retry time."""
    redis_url = os.environ.get("TEST_REDIS_URL")
    if not redis_url:
        absent("RQ test needs TEST_REDIS_URL")
    from redis import Redis
    from rq import Queue, SimpleWorker
    from rq.registry import ScheduledJobRegistry

    from tests.conftest import FIELD_KEY

    staff = _mci_staff(client)
    trial_id = staff.trial.id
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    connection = Redis.from_url(redis_url)
    queue = Queue(TEST_QUEUE, connection=connection)
    app.config["QUEUE_NAME"] = TEST_QUEUE
    monkeypatch.setenv("DTX_QUEUE_NAME", TEST_QUEUE)
    queue.empty()
    _clear_scheduled(queue)
    with LocalSmtpServer() as smtp:
        app.config.update({**smtp.config, "QUEUE_URL": redis_url})
        try:
            api(
                client, staff["inv"], "POST", f"/participants/{subject}/unblinding",
                {"password": PASSWORD, "reason": "anaphylaxis", "category": "medical_emergency"},
                200,
            )
            assert smtp.messages == [] and queue.count == 1  # enqueued, not sent
            monkeypatch.setenv("DATABASE_URL", database_url)
            monkeypatch.setenv("DTX_FIELD_KEY", FIELD_KEY)
            for key, value in smtp.config.items():
                monkeypatch.setenv(f"DTX_{key}", str(value))
            monkeypatch.setenv("DTX_QUEUE_URL", redis_url)
            SimpleWorker([queue], connection=connection).work(burst=True)
            assert len(smtp.wait_for(3)) == 3
            # a failing attempt: the job schedules the next run at the retry time
            _queue_one("late@example.org", trial_id)
            monkeypatch.setenv("DTX_SMTP_PORT", str(free_port()))
            queue.empty()
            queue.enqueue("dtx_trials.jobs.deliver_notifications_job")
            SimpleWorker([queue], connection=connection).work(burst=True)
            scheduled = ScheduledJobRegistry(queue=queue)
            assert len(scheduled) == 1
        finally:
            app.config.update({key: None for key in (*smtp.config, "QUEUE_URL")})
            _clear_scheduled(queue)
            queue.empty()
    db.session.remove()
    statuses = sorted(
        db.session.scalars(
            select(Notification.status).where(Notification.trial_id == trial_id)
        )
    )
    assert statuses == ["pending", "sent", "sent", "sent"]
