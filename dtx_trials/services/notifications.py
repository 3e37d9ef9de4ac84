"""The notification outbox: enqueue in the causing transaction, deliver afterwards, audited.

Enqueueing (`notify_roles`, `enqueue`) runs inside the transaction of the change that causes
the message, so the message exists if and only if the change committed; nothing is sent from
inside that transaction (no network call under the caller's locks). After the commit the shell
dispatches delivery (`dtx_trials.jobs.dispatch_notifications`: an RQ job, or in-process without
a queue); `dtx notifications deliver` does the same from the command line.

Delivery (`deliver_pending`) takes one row at a time under a row lock (``SKIP LOCKED`` on
PostgreSQL, so several workers share the work), sends it through its channel, and records the
outcome with an audit event in one transaction: sent; or a transient failure, retried after
1, 5, 30 and 120 minutes; or failed for good (a refused recipient, or five attempts). A worker
that dies between sending and committing leaves the row pending, so a message is delivered at
least once; e-mails keep their Message-ID across attempts so receivers can drop duplicates.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session

from dtx_trials.channels import Channel, DeliveryError, OutgoingMessage
from dtx_trials.db import transaction, utcnow
from dtx_trials.models import Membership, Notification, Trial, User
from dtx_trials.models.users import SITE_BOUND_ROLES, Role
from dtx_trials.services import audit
from dtx_trials.services.access import Actor, require

PENDING, SENT, FAILED, UNDELIVERABLE = "pending", "sent", "failed", "undeliverable"
MAX_ATTEMPTS = 5
RETRY_AFTER = (
    datetime.timedelta(minutes=1),
    datetime.timedelta(minutes=5),
    datetime.timedelta(minutes=30),
    datetime.timedelta(minutes=120),
)
NOTIFIER = Actor(
    user_id=None, username="notifier", printed_name="Notification worker", via="system"
)
_DISPATCH = "dtx_notifications_enqueued"


def enqueue(
    session: Session,
    actor: Actor,
    *,
    trial_id: int | None,
    kind: str,
    channel: str,
    address: str | None,
    subject: str,
    body: str,
    recipient: User | None = None,
    recipient_role: str | None = None,
    entity_type: str | None = None,
    entity_id: int | None = None,
) -> Notification:
    """Write one message to the outbox inside the caller's transaction (audited): call it
    within the `transaction()` of the change that causes it, never on its own.

    Without an address the row is `undeliverable` at once (visible in the list, never sent).
    """
    now = utcnow()
    notification = Notification(
        trial_id=trial_id,
        kind=kind,
        channel=channel,
        recipient_user_id=recipient.id if recipient is not None else None,
        recipient_role=recipient_role,
        address=address or None,
        subject=subject,
        body=body,
        entity_type=entity_type,
        entity_id=entity_id,
        status=PENDING if address else UNDELIVERABLE,
        attempts=0,
        next_attempt_at=now,
        last_error=None if address else f"no {channel} address for the recipient",
        created_at=now,
    )
    session.add(notification)
    audit.record_create(session, actor, "notification.queued", notification)
    if address:
        session.info[_DISPATCH] = True
    return notification


def recipients(
    session: Session, trial_id: int, roles: Collection[str], site_id: int | None
) -> list[tuple[User, str]]:
    """Return the active users holding any of `roles` in the trial, each once with a role.

    Site-bound roles (investigator, coordinator) count only at `site_id`, and a membership
    limited to a site (a monitor's) only there when the notice is a site's.
    """
    wanted = {Role(role) for role in roles}
    rows = session.execute(
        select(User, Membership)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.trial_id == trial_id, User.is_active.is_(True))
        .order_by(User.id, Membership.id)
    ).all()
    found: dict[int, tuple[User, str]] = {}
    for user, membership in rows:
        role = Role(membership.role)
        if role not in wanted or not membership.is_active:
            continue
        if role in SITE_BOUND_ROLES and membership.site_id != site_id:
            continue
        if membership.site_id is not None and site_id is not None and (
            membership.site_id != site_id
        ):
            continue  # (before: a monitor of site B was sent site A's unblinding notice)
        found.setdefault(user.id, (user, role.value))
    return list(found.values())


def notify_roles(
    session: Session,
    actor: Actor,
    *,
    trial: Trial,
    roles: Collection[str],
    site_id: int | None,
    kind: str,
    subject: str,
    body: str,
    entity_type: str | None = None,
    entity_id: int | None = None,
) -> list[Notification]:
    """E-mail everyone holding one of `roles` in the trial (site-bound roles at `site_id`)."""
    return [
        enqueue(
            session,
            actor,
            trial_id=trial.id,
            kind=kind,
            channel="email",
            address=user.email,
            subject=subject,
            body=body,
            recipient=user,
            recipient_role=role,
            entity_type=entity_type,
            entity_id=entity_id,
        )
        for user, role in recipients(session, trial.id, roles, site_id)
    ]


@sa_event.listens_for(Session, "after_commit")
def _dispatch_after_commit(session: Session) -> None:
    if session.info.pop(_DISPATCH, False):
        from dtx_trials.jobs import dispatch_notifications

        dispatch_notifications()


@sa_event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_DISPATCH, None)


# ---------------------------------------------------------------- delivery


@dataclass(frozen=True)
class DeliveryReport:
    """What one `deliver_pending` pass did, by outcome."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    waiting: int = 0  # pending rows left for later (a retry not yet due, or no channel)


def _sanitized(error: str, address: str | None) -> str:
    """Return the error text without the recipient's address (personal data)."""
    return error.replace(address, "<recipient>")[:500] if address else error[:500]


def deliver_one(
    session: Session,
    notification_id: int,
    channels: Mapping[str, Channel],
    now: datetime.datetime,
) -> str | None:
    """Send one due pending notification; return its new status, or None if it was not due."""
    with transaction(session):
        stmt = (
            select(Notification)
            .where(Notification.id == notification_id)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
        notification = session.scalars(stmt).first()
        channel = channels.get(notification.channel) if notification is not None else None
        if (
            notification is None
            or channel is None
            or notification.status != PENDING
            or notification.next_attempt_at > now
        ):
            return None
        before = audit.snapshot(notification)
        notification.attempts += 1
        message = OutgoingMessage(
            notification.id, notification.address or "", notification.subject, notification.body
        )
        reason = None
        try:
            notification.provider_id = channel.send(message)
        except DeliveryError as exc:
            notification.last_error = _sanitized(str(exc), notification.address)
            reason = notification.last_error
            if exc.permanent or notification.attempts >= MAX_ATTEMPTS:
                notification.status = FAILED
                action = "notification.failed"
            else:
                notification.next_attempt_at = now + RETRY_AFTER[notification.attempts - 1]
                action = "notification.retry"
        else:
            notification.status = SENT
            notification.sent_at = now
            notification.last_error = None
            action = "notification.sent"
        audit.record_update(session, NOTIFIER, action, notification, before, reason=reason)
        return notification.status


def deliver_pending(
    session: Session,
    channels: Mapping[str, Channel],
    *,
    now: datetime.datetime | None = None,
    limit: int = 500,
) -> DeliveryReport:
    """Deliver every due pending notification whose channel is configured (oldest first)."""
    now = now or utcnow()
    due = list(
        session.scalars(
            select(Notification.id)
            .where(
                Notification.status == PENDING,
                Notification.next_attempt_at <= now,
                Notification.channel.in_(list(channels)),
            )
            .order_by(Notification.id)
            .limit(limit)
        )
    )
    session.rollback()  # end the read before each row's own transaction
    counts = {SENT: 0, PENDING: 0, FAILED: 0}
    for notification_id in due:
        status = deliver_one(session, notification_id, channels, now)
        if status is not None:
            counts[status] += 1
    waiting = len(
        session.scalars(select(Notification.id).where(Notification.status == PENDING)).all()
    )
    session.rollback()
    return DeliveryReport(counts[SENT], counts[PENDING], counts[FAILED], waiting)


def next_retry_at(session: Session) -> datetime.datetime | None:
    """Return when the earliest pending notification falls due (None when none is pending)."""
    when = session.scalars(
        select(Notification.next_attempt_at)
        .where(Notification.status == PENDING)
        .order_by(Notification.next_attempt_at)
        .limit(1)
    ).first()
    session.rollback()
    return when


def list_notifications(session: Session, actor: Actor, trial: Trial) -> list[Notification]:
    """The trial's notifications with their delivery status (never their text)."""
    require(actor, "notification.read", trial.id)
    return list(
        session.scalars(
            select(Notification)
            .where(Notification.trial_id == trial.id)
            .order_by(Notification.id)
        )
    )
