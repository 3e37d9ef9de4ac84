"""Staff invitations by e-mail link from the trial set-up (issue #22): a sponsor admin invites a
site user with a role and a site; the e-mail goes through a real SMTP server; the invitee
chooses a password with the one-time, expiring link; every step is audited. Tested as the
adversary too: an invitation grants nothing its sender could not grant alone."""

from __future__ import annotations

import re
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from dtx_trials.channels import SmtpChannel
from dtx_trials.db import utcnow
from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, Membership, Site, User
from dtx_trials.services import notifications
from tests.dtx_trials.trial_flow import load_trial
from tests.mail_server import LocalSmtpServer
from tests.web.web_helpers import MCI, PageClient, check_accessible

PASSPHRASE = "a passphrase only the invitee knows"


def _invite(page: PageClient, **form: str):  # type: ignore[no-untyped-def]
    return page.post(f"{MCI}/invitations", {
        "username": "drwang", "printed_name": "Dr Wang", "email": "wang@example.org",
        "role": "investigator", "site": "BJ01", **form,
    })


def _count(model: type) -> int:
    return db.session.scalar(select(func.count()).select_from(model)) or 0


def test_invited_investigator_chooses_a_password_and_works_at_the_site(
    app: Flask, client: FlaskClient
) -> None:
    staff = load_trial(client)
    sponsor = PageClient(app, staff["sponsor"])
    dashboard = sponsor.text(f"{MCI}?tab=accounts")
    assert 'id="invite-form"' in dashboard
    check_accessible(dashboard)
    sent = _invite(sponsor)
    assert sent.status_code == 302 and "msg=invited" in sent.location
    user = db.session.scalars(select(User).where(User.username == "drwang")).one()
    membership = db.session.scalars(select(Membership).where(Membership.user_id == user.id)).one()
    site = db.session.get(Site, membership.site_id)
    assert membership.is_active and membership.role == "investigator" and site.code == "BJ01"
    actions = set(db.session.scalars(
        select(AuditEvent.action).where(AuditEvent.entity_id == user.id)))
    assert "user.create" in actions
    assert db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "membership.grant", AuditEvent.entity_id == membership.id
    )).first() is not None
    with LocalSmtpServer() as smtp:
        channels = {"email": SmtpChannel(host="127.0.0.1", port=smtp.port,
                                         sender="trials@example.org")}
        notifications.deliver_pending(db.session, channels)
        (to, mail), = smtp.wait_for(1)
    body = mail.get_content()
    assert to == ["wang@example.org"] and "MCI-COGTRAIN-01 as investigator at site BJ01" in body
    link = re.search(r"(/activate/[A-Za-z0-9_-]+)", body)
    assert link
    token = link.group(1).rsplit("/", 1)[1]
    # the sender never sees the link: not on the page it was sent from, not in the trail
    assert token not in sponsor.text(f"{MCI}?tab=accounts")
    assert token not in " ".join(str(e.changes) for e in db.session.scalars(select(AuditEvent)))
    invitee = PageClient(app)
    form = invitee.client.get(link.group(1)).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf
    done = invitee.client.post(link.group(1), data={
        "password": PASSPHRASE, "password_again": PASSPHRASE, "csrf_token": csrf.group(1)})
    assert done.status_code == 302
    form = invitee.client.get(link.group(1)).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf
    again = invitee.client.post(link.group(1), data={
        "password": "another passphrase entirely", "password_again": "another passphrase "
        "entirely", "csrf_token": csrf.group(1)})
    assert again.status_code == 404  # one-time
    assert invitee.sign_in("drwang", PASSPHRASE).status_code == 302
    assert invitee.get(f"{MCI}/participants").status_code == 200
    assert invitee.get(f"{MCI}/builder").status_code == 403  # an investigator sets nothing up
    assert _invite(invitee, username="friend", email="f@example.org").status_code == 403


def test_an_expired_invitation_link_is_refused(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    sponsor = PageClient(app, staff["sponsor"])
    assert _invite(sponsor, role="monitor", site="").status_code == 302
    user = db.session.scalars(select(User).where(User.username == "drwang")).one()
    user.activation_expires_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    with LocalSmtpServer() as smtp:
        notifications.deliver_pending(db.session, {"email": SmtpChannel(
            host="127.0.0.1", port=smtp.port, sender="trials@example.org")})
        (_, mail), = smtp.wait_for(1)
    path = re.search(r"(/activate/[A-Za-z0-9_-]+)", mail.get_content())
    assert path
    invitee = PageClient(app)
    form = invitee.client.get(path.group(1)).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf
    refused = invitee.client.post(path.group(1), data={
        "password": PASSPHRASE, "password_again": PASSPHRASE, "csrf_token": csrf.group(1)})
    assert refused.status_code == 404


def test_invitations_grant_nothing_the_sender_could_not(app: Flask, client: FlaskClient) -> None:
    """As the adversary: a sponsor admin of a double-blind trial invites an account it controls
    (its own e-mail) as unblinded statistician; site users and blinded roles cannot invite."""
    staff = load_trial(client)
    sponsor = PageClient(app, staff["sponsor"])
    users_before, members_before = _count(User), _count(Membership)
    # refused: nothing half-written (no account without its role), errors at their inputs
    for form, field in (
        ({"role": "investigator", "site": ""}, "site"),
        ({"role": "overlord"}, "role"),
        ({"email": ""}, "email"),
        ({"username": "sponsor"}, "username"),  # taken
        ({"site": "NOWHERE"}, "site"),
    ):
        bad = _invite(sponsor, **form)
        assert bad.status_code in (409, 422), (form, bad.status_code)
        assert (_count(User), _count(Membership)) == (users_before, members_before), form
        if bad.status_code == 422:
            assert f'id="invite-{field}-err"' in bad.text, form
    # an unblinded role waits for a second administrator: the invitee knows nothing yet
    sent = _invite(sponsor, username="sponsor_alt", email="sponsor@example.org",
                   role="unblinded_statistician", site="")
    assert sent.status_code == 302
    alt = db.session.scalars(select(User).where(User.username == "sponsor_alt")).one()
    pending = db.session.scalars(select(Membership).where(Membership.user_id == alt.id)).one()
    assert not pending.is_active and pending.pending_since is not None
    assert db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "membership.request", AuditEvent.entity_id == pending.id
    )).first() is not None
    # the same admin cannot approve it
    approve = sponsor.post(f"{MCI}/memberships/{pending.id}/approve", {})
    assert approve.status_code == 403
    db.session.refresh(pending)
    assert not pending.is_active
    # site staff, blinded sponsor-side roles and the statistician cannot invite at all
    for name in ("inv", "coord", "monitor", "stat", "unblinded"):
        other = PageClient(app, staff[name])
        assert _invite(other, username=f"x_{name}", email=f"{name}@example.org").status_code in (
            403, 404), name
    assert _count(User) == users_before + 1


def test_an_invited_administrator_cannot_approve_for_the_one_who_invited_it(
    app: Flask, client: FlaskClient
) -> None:
    """The two-person rule is not bypassed with sock puppets: admin A invites B (an address A
    reads) as sponsor admin, B invites D; neither approves A's request for an unblinded role.
    An administrator A did not appoint does."""
    from tests.helpers import make_user

    staff = load_trial(client)
    sponsor = PageClient(app, staff["sponsor"])

    def activate(email: str, username: str) -> PageClient:
        with LocalSmtpServer() as smtp:
            notifications.deliver_pending(db.session, {"email": SmtpChannel(
                host="127.0.0.1", port=smtp.port, sender="trials@example.org")})
            mails = smtp.wait_for(1)
        body = next(m.get_content() for to, m in mails if to == [email])
        path = re.search(r"(/activate/[A-Za-z0-9_-]+)", body)
        assert path
        owner = PageClient(app)
        form = owner.client.get(path.group(1)).get_data(as_text=True)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert csrf
        assert owner.client.post(path.group(1), data={
            "password": PASSPHRASE, "password_again": PASSPHRASE,
            "csrf_token": csrf.group(1)}).status_code == 302
        assert owner.sign_in(username, PASSPHRASE).status_code == 302
        return owner

    assert _invite(sponsor, username="puppet", email="a.private@example.org",
                   role="sponsor_admin", site="").status_code == 302
    puppet = activate("a.private@example.org", "puppet")
    assert _invite(puppet, username="puppet2", email="a.other@example.org",
                   role="sponsor_admin", site="").status_code == 302
    puppet2 = activate("a.other@example.org", "puppet2")
    assert _invite(sponsor, username="insider", email="insider@example.org",
                   role="unblinded_statistician", site="").status_code == 302
    insider = db.session.scalars(select(User).where(User.username == "insider")).one()
    pending = db.session.scalars(select(Membership).where(Membership.user_id == insider.id)).one()
    for approver in (puppet, puppet2):
        refused = approver.post(f"{MCI}/memberships/{pending.id}/approve", {})
        assert refused.status_code == 403
        db.session.refresh(pending)
        assert not pending.is_active
    independent = PageClient(app, make_user("admin_b", role="sponsor_admin", trial=staff.trial))
    assert independent.post(f"{MCI}/memberships/{pending.id}/approve", {}).status_code == 302
    db.session.refresh(pending)
    assert pending.is_active and pending.approved_by_id is not None
