"""Accounts: users, passwords (argon2id), lockout, API tokens, web sessions, role grants."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import Flask, current_app, has_app_context
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session

from dtx_trials.db import deferred_commit, lock_row, transaction, utcnow
from dtx_trials.models import ApiToken, Membership, Site, Trial, User, WebSession
from dtx_trials.models.users import SITE_BOUND_ROLES, TRIAL_WIDE_ROLES, Role
from dtx_trials.services import audit, notifications
from dtx_trials.services.access import (
    SYSTEM,
    UNBLINDED_ROLES,
    Actor,
    Grant,
    knows_allocation,
    require,
)
from dtx_trials.services.errors import (
    AccountLocked,
    AuthenticationError,
    Conflict,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from dtx_trials.services.protocols import blinded_roles


def _dummy() -> str:
    """A hash of a random password, verified when the username is unknown so that a login for
    a non-existent account costs the same time as one for a real account (under the app's
    hasher: the same cost)."""
    own = credentials()
    if not own.dummy_hash:
        own.dummy_hash = own.hasher.hash(secrets.token_urlsafe(16))
    return own.dummy_hash


@dataclass(frozen=True)
class Policy:
    lockout_threshold: int = 5
    lockout_minutes: int = 15
    password_min_length: int = 12
    token_hours: int = 12
    session_idle_minutes: int = 30
    session_max_hours: int = 12


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_password_policy(password: str, policy: Policy, username: str = "") -> None:
    """Raise ValidationError unless the password is 12–128 characters and not the username."""
    problems = []
    if len(password) < policy.password_min_length:
        problems.append(f"must have at least {policy.password_min_length} characters")
    if len(password) > 128:
        problems.append("must have at most 128 characters")
    if username and password.lower() == username.lower():
        problems.append("must differ from the username")
    if problems:
        raise ValidationError("password rejected", {"password": problems})


def hash_password(password: str) -> str:
    return credentials().hasher.hash(password)


def actor_for(
    session: Session,
    user: User,
    *,
    via: str,
    request_id: str | None = None,
    auth_ref: str | None = None,
) -> Actor:
    """Load the user's active grants into an Actor (`auth_ref`: the token or session used)."""
    grants = tuple(
        Grant(m.trial_id, m.site_id, Role(m.role))
        for m in session.scalars(
            select(Membership).where(Membership.user_id == user.id, Membership.is_active)
        )
    )
    return Actor(
        user_id=user.id,
        username=user.username,
        printed_name=user.printed_name,
        grants=grants,
        is_superuser=user.is_superuser,
        request_id=request_id,
        via=via,
        auth_ref=auth_ref,
    )


def create_user(
    session: Session,
    actor: Actor,
    *,
    username: str,
    printed_name: str,
    password: str | None = None,
    email: str | None = None,
    is_superuser: bool = False,
    policy: Policy = Policy(),
    activation_link: Callable[[str], str] | None = None,
    invitation: str = "",
) -> User:
    """Create an account. Only a superuser, or a sponsor admin of some trial, may do so.

    Administrators never choose the password: without `password` (the server operator's CLI
    and tests give one) the account gets an unusable password and a one-time activation link,
    e-mailed to its owner through the notification outbox in the same transaction; the owner
    chooses the password (`activate_account`). The link is never returned to the creator."""
    if not (
        actor.is_superuser
        or actor.via == "cli"
        or any(g.role == Role.SPONSOR_ADMIN for g in actor.grants)
    ):
        raise PermissionDenied("only administrators create accounts")
    if is_superuser and not (actor.is_superuser or actor.via == "cli"):
        raise PermissionDenied("only a superuser creates superusers")
    username = username.strip().lower()
    if not username or not username.replace("_", "").replace(".", "").replace("-", "").isalnum():
        raise ValidationError("invalid username", {"username": ["letters, digits, . _ - only"]})
    if password is not None:
        check_password_policy(password, policy, username)
    elif not email:
        raise ValidationError(
            "an e-mail address is required",
            {"email": ["required: the activation link, with which the owner chooses a "
                       "password, goes there"]},
        )
    elif activation_link is None:
        raise ValueError("an account without a password needs an activation link builder")
    token = secrets.token_urlsafe(32)
    with transaction(session):
        if session.scalars(select(User).where(User.username == username)).first():
            raise Conflict(f"username '{username}' is taken (usernames are never reused)")
        user = User(
            username=username,
            printed_name=printed_name.strip(),
            email=email,
            # nobody knows a random password: the account cannot sign in before activation
            password_hash=hash_password(password or secrets.token_urlsafe(32)),
            is_superuser=is_superuser,
        )
        if password is None:
            user.activation_sha256 = hashlib.sha256(token.encode()).hexdigest()
            user.activation_expires_at = utcnow() + ACTIVATION_VALID
        session.add(user)
        session.flush()
        audit.record_create(session, actor, "user.create", user, trial_id=None)
        if password is None and activation_link is not None:
            notifications.enqueue(
                session,
                actor,
                trial_id=None,
                kind="account_activation",
                channel="email",
                address=email,
                recipient=user,
                subject="Your dtx-trials account: choose your password",
                body=(
                    f"Dear {user.printed_name},\n\nAn account '{username}' was created for you "
                    f"on dtx-trials.{invitation} Choose your password here (the link works "
                    f"once, until "
                    f"{user.activation_expires_at:%Y-%m-%d %H:%M} UTC):\n\n"
                    f"{activation_link(token)}\n\nIf you did not expect this, ignore it."
                ),
                entity_type="user",
                entity_id=user.id,
            )
    return user


ACTIVATION_VALID = timedelta(hours=72)


def invite_staff(
    session: Session,
    actor: Actor,
    *,
    trial_id: int,
    username: str,
    printed_name: str,
    email: str | None,
    role: str,
    site_id: int | None,
    policy: Policy = Policy(),
    activation_link: Callable[[str], str],
) -> Membership:
    """Invite a new member of staff to a trial: an account whose owner chooses the password
    with the e-mailed one-time link (``create_user``) and its role there (``grant_role``, under
    every separation-of-duties and two-person rule: an unblinded role in a blinded trial waits
    for a second administrator), in one transaction: both or neither. Sponsor admins of the
    trial (or a superuser) invite; the link is never shown to them."""
    if not actor.is_superuser:
        require(actor, "membership.manage", trial_id)
    if not email:
        raise ValidationError("an e-mail address is required",
                              {"email": ["required: the invitation link goes there"]})
    try:
        Role(role)
    except ValueError as exc:
        raise ValidationError("unknown role", {"role": [f"one of {', '.join(Role)}"]}) from exc
    trial = session.get(Trial, trial_id)
    if trial is None:
        raise NotFound("trial not found")
    site = session.get(Site, site_id) if site_id is not None else None
    where = f" at site {site.code}" if site is not None else ""
    invitation = f" You are invited to trial {trial.code} as {role}{where}."
    try:
        with deferred_commit(session):  # the account and its role: one unit of work
            user = create_user(
                session, actor, username=username, printed_name=printed_name, email=email,
                policy=policy, activation_link=activation_link, invitation=invitation,
            )
            membership = grant_role(
                session, actor, trial_id=trial_id, user_id=user.id, role=role, site_id=site_id
            )
    except BaseException:
        session.rollback()  # a refusal before grant_role's own transaction leaves nothing
        raise
    with transaction(session):  # commit now, or with the request that defers it
        pass
    return membership


def activate_account(
    session: Session, token: str, password: str, *, policy: Policy = Policy()
) -> User:
    """The account's owner chooses the password with the one-time link (audited, as the owner).

    An unknown, used or expired link is a 404 that says which of these it may be, no more."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    with transaction(session):
        user = session.scalars(
            select(User).where(User.activation_sha256 == digest).with_for_update()
        ).first()
        if (
            user is None
            or not user.is_active
            or user.activation_expires_at is None
            or user.activation_expires_at <= utcnow()
        ):
            raise NotFound("this activation link is unknown, used or expired; ask your "
                           "administrator for a new one")
        check_password_policy(password, policy, user.username)
        before = audit.snapshot(user)
        user.password_hash = hash_password(password)
        user.password_changed_at = utcnow()
        user.activation_sha256 = None
        user.activation_expires_at = None
        # no session exists yet: the event is the system's, naming the owner's one-time link
        audit.record_update(
            session, _system_actor(None), "user.activated", user, before,
            reason="password chosen by the account's owner with the e-mailed activation link",
        )
    return user


def set_password(
    session: Session,
    actor: Actor,
    user_id: int,
    new_password: str,
    *,
    current_password: str | None = None,
    policy: Policy = Policy(),
    keep_web_session_id: int | None = None,
) -> None:
    """Change a password: the user gives the current one; a superuser/CLI may reset it.

    Every API token and every browser session of the user ends with the old password, except
    the browser session the user changed it from (``keep_web_session_id``)."""
    own = actor.user_id == user_id and actor.via != "cli"
    if own:
        # checked like a sign-in: wrong current passwords count towards the lockout (SEC-02)
        try:
            reauthenticate(
                session, actor, current_password or "", purpose="password_change", policy=policy
            )
        except PermissionDenied as exc:
            raise PermissionDenied("current password is wrong") from exc
    with transaction(session):
        user = lock_row(session, User, user_id)
        if user is None:
            raise NotFound("user not found")
        if not own and not (actor.is_superuser or actor.via == "cli"):
            raise PermissionDenied("only the user or a superuser changes a password")
        check_password_policy(new_password, policy, user.username)
        before = audit.snapshot(user)
        user.password_hash = hash_password(new_password)
        user.password_changed_at = utcnow()
        user.failed_logins = 0
        user.locked_until = None
        now = utcnow()
        tokens = session.scalars(
            select(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        ).all()
        ending = select(WebSession).where(
            WebSession.user_id == user_id, WebSession.revoked_at.is_(None)
        )
        if own and keep_web_session_id is not None:
            ending = ending.where(WebSession.id != keep_web_session_id)
        browsers = session.scalars(ending).all()
        for row in (*tokens, *browsers):
            row.revoked_at = now
        # the new hash is sealed into the trail: a hash planted by direct UPDATE is reported;
        # the reason says how many tokens and browser sessions ended with the old password
        audit.record_update(
            session,
            actor,
            "user.password_changed",
            user,
            before,
            reason=f"{len(tokens)} token(s) revoked, {len(browsers)} other session(s) ended",
        )


def _verify(password_hash: str, password: str) -> bool:
    try:
        return credentials().hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def authenticate(
    session: Session,
    username: str,
    password: str,
    *,
    policy: Policy = Policy(),
    request_id: str | None = None,
    purpose: str = "login",
) -> User:
    """Check a username and password, counting failures and locking the account.

    Commits on its own: a failed attempt must be recorded even though the caller gets an error.
    """
    now = utcnow()
    username = (username or "").strip().lower()
    with transaction(session, commit_now=True):
        user = session.scalars(select(User).where(User.username == username)).first()
        if user is not None:
            user = lock_row(session, User, user.id)
        if user is None or not user.is_active:
            _verify(_dummy(), password)
            audit.record_event(
                session,
                _system_actor(request_id),
                f"{purpose}.failed",
                entity_type="user",
                entity_id=None,
                trial_id=None,
                details={"reason": "unknown or inactive account"},
            )
            failure: Exception = AuthenticationError("invalid username or password")
        elif user.locked_until is not None and user.locked_until > now:
            audit.record_event(
                session,
                _system_actor(request_id),
                f"{purpose}.refused_locked",
                entity_type="user",
                entity_id=user.id,
                trial_id=None,
            )
            failure = AccountLocked(
                "account locked after repeated failures; try again later",
                locked_until=user.locked_until.isoformat(),
            )
        elif not _verify(user.password_hash, password):
            user.failed_logins += 1
            details: dict[str, object] = {"failed_logins": user.failed_logins}
            failure = AuthenticationError("invalid username or password")
            if user.failed_logins >= policy.lockout_threshold:
                user.locked_until = now + timedelta(minutes=policy.lockout_minutes)
                user.failed_logins = 0
                details["locked_until"] = user.locked_until
                failure = AccountLocked(
                    "account locked after repeated failures; try again later",
                    locked_until=user.locked_until.isoformat(),
                )
            audit.record_event(
                session,
                _system_actor(request_id),
                f"{purpose}.failed",
                entity_type="user",
                entity_id=user.id,
                trial_id=None,
                details=details,
            )
        else:
            user.failed_logins = 0
            user.locked_until = None
            audit.record_event(
                session,
                _system_actor(request_id),
                f"{purpose}.succeeded",
                entity_type="user",
                entity_id=user.id,
                trial_id=None,
            )
            return user
    raise failure


def _system_actor(request_id: str | None) -> Actor:
    return Actor(
        user_id=None, username="system", printed_name="System", via="system", request_id=request_id
    )


def reauthenticate(
    session: Session, actor: Actor, password: str, *, purpose: str, policy: Policy = Policy()
) -> User:
    """Check the signed-in user's password again (signatures, unblinding, exports)."""
    if actor.user_id is None:
        raise PermissionDenied("re-authentication needs a user")
    user = session.get(User, actor.user_id)
    if user is None:
        raise PermissionDenied("re-authentication failed")
    try:
        return authenticate(
            session,
            user.username,
            password,
            policy=policy,
            request_id=actor.request_id,
            purpose=purpose,
        )
    except AuthenticationError as exc:
        raise PermissionDenied(f"{purpose}: password check failed") from exc


def issue_token(
    session: Session,
    user: User,
    *,
    name: str = "api",
    hours: int | None = None,
    policy: Policy = Policy(),
    request_id: str | None = None,
) -> tuple[ApiToken, str]:
    """Create a bearer token; return the row and the token text (shown once, stored hashed)."""
    hours = min(hours or policy.token_hours, 24 * 90)
    token_text = "dtx_" + secrets.token_urlsafe(32)
    with transaction(session):
        token = ApiToken(
            user_id=user.id,
            token_hash=sha256_hex(token_text),
            name=name[:100],
            expires_at=utcnow() + timedelta(hours=hours),
        )
        session.add(token)
        session.flush()
        audit.record_event(
            session,
            actor_for(
                session, user, via="api", request_id=request_id, auth_ref=f"token:{token.id}"
            ),
            "token.issued",
            entity_type="api_token",
            entity_id=token.id,
            trial_id=None,
            details={"name": token.name, "expires_at": token.expires_at},
        )
    return token, token_text


def revoke_token(session: Session, actor: Actor, token_id: int) -> None:
    with transaction(session):
        token = lock_row(session, ApiToken, token_id)
        if token is None or (token.user_id != actor.user_id and not actor.is_superuser):
            raise NotFound("token not found")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
            audit.record_event(
                session,
                actor,
                "token.revoked",
                entity_type="api_token",
                entity_id=token.id,
                trial_id=None,
            )


def user_for_token(session: Session, token_text: str) -> User | None:
    """Return the active user owning an unexpired, unrevoked token (None otherwise)."""
    found = live_token(session, token_text)
    return found[0] if found else None


def live_token(session: Session, token_text: str) -> tuple[User, ApiToken] | None:
    """Return the active user and the unexpired, unrevoked token (None otherwise)."""
    token = session.scalars(
        select(ApiToken).where(ApiToken.token_hash == sha256_hex(token_text))
    ).first()
    now = utcnow()
    if token is None or token.revoked_at is not None or token.expires_at <= now:
        return None
    user = session.get(User, token.user_id)
    return (user, token) if user is not None and user.is_active else None


@dataclass(frozen=True)
class _CachedToken:
    actor: Actor  # without request id
    expires_at: datetime  # the token's own expiry
    fresh_until: float  # time.monotonic() deadline of this cache entry


class TokenCache:
    """The actors of recently presented API tokens, per app (`credentials`), keyed by the
    token's hash.

    An entry is used for at most ``seconds`` (``TOKEN_CACHE_SECONDS``) and never past the
    token's expiry. Any commit of the app that changes an account, a token or a role grant
    empties its cache (`_note_account_change`), so a revocation, a deactivation or a removed
    role is refused at once by this app, and by every other worker process (or other app of
    the process) within ``seconds``. ``seconds=0`` turns the cache off (every request reads the
    database)."""

    MAX_ENTRIES = 4096

    def __init__(self, seconds: float = 2.0) -> None:
        self.seconds = seconds
        self._entries: dict[str, _CachedToken] = {}
        self._lock = threading.Lock()

    def get(self, token_hash: str, now: datetime) -> Actor | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        if entry.fresh_until <= time.monotonic() or entry.expires_at <= now:
            with self._lock:
                self._entries.pop(token_hash, None)
            return None
        return entry.actor

    def put(self, token_hash: str, actor: Actor, expires_at: datetime) -> None:
        if self.seconds <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[token_hash] = _CachedToken(
                actor, expires_at, time.monotonic() + self.seconds
            )

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass
class Credentials:
    """An app's password hasher (its argon2id cost, ``ARGON2_TIME_COST`` and
    ``ARGON2_MEMORY_KIB``) and API-token cache (its lifetime, ``TOKEN_CACHE_SECONDS``): the
    app's own (`init_app`), so that no other app of the process, a refused one included,
    changes them; outside an app context the defaults."""

    hasher: PasswordHasher
    tokens: TokenCache
    dummy_hash: str = ""  # `_dummy`'s, under this hasher


_CREDENTIALS = "dtx_credentials"
_DEFAULT_CREDENTIALS = Credentials(PasswordHasher(), TokenCache())


def init_app(app: Flask) -> None:
    """Give the app its own hasher and token cache, from its configuration."""
    config = app.config
    hasher = PasswordHasher(
        time_cost=int(config["ARGON2_TIME_COST"]), memory_cost=int(config["ARGON2_MEMORY_KIB"])
    )
    app.extensions[_CREDENTIALS] = Credentials(
        hasher, TokenCache(float(config["TOKEN_CACHE_SECONDS"]))
    )


def credentials() -> Credentials:
    """The current app's hasher and token cache (the defaults outside an app context)."""
    if has_app_context():
        own: Credentials | None = current_app.extensions.get(_CREDENTIALS)
        if own is not None:
            return own
    return _DEFAULT_CREDENTIALS


def token_cache() -> TokenCache:
    """The current app's token cache."""
    return credentials().tokens


def actor_for_token(
    session: Session, token_text: str, *, request_id: str | None = None
) -> Actor | None:
    """The actor of a live API token (None if unknown, expired, revoked or the account is
    inactive): from the token cache, else one query joining token, user and active grants."""
    token_hash = sha256_hex(token_text)
    now = utcnow()
    tokens = token_cache()
    cached = tokens.get(token_hash, now)
    if cached is None:
        rows = session.execute(
            select(
                ApiToken.id,
                ApiToken.expires_at,
                User.id,
                User.username,
                User.printed_name,
                User.is_superuser,
                Membership.trial_id,
                Membership.site_id,
                Membership.role,
            )
            .join(User, User.id == ApiToken.user_id)
            .outerjoin(Membership, (Membership.user_id == User.id) & Membership.is_active)
            .where(
                ApiToken.token_hash == token_hash,
                ApiToken.revoked_at.is_(None),
                ApiToken.expires_at > now,
                User.is_active,
            )
            .order_by(Membership.id)
        ).all()
        if not rows:
            return None
        token_id, expires_at, user_id, username, printed_name, is_superuser = rows[0][:6]
        cached = Actor(
            user_id=user_id,
            username=username,
            printed_name=printed_name,
            grants=tuple(
                Grant(r.trial_id, r.site_id, Role(r.role)) for r in rows if r.role is not None
            ),
            is_superuser=is_superuser,
            via="api",
            auth_ref=f"token:{token_id}",
        )
        tokens.put(token_hash, cached, expires_at)
    return replace(cached, request_id=request_id, extra={})


_ACCOUNT_CHANGED = "dtx_account_changed"


@sa_event.listens_for(Session, "after_flush")
def _note_account_change(session: Session, context: Any) -> None:
    if any(
        isinstance(obj, User | ApiToken | Membership)
        for obj in (*session.new, *session.dirty, *session.deleted)
    ):
        session.info[_ACCOUNT_CHANGED] = True


@sa_event.listens_for(Session, "do_orm_execute")
def _note_bulk_account_change(state: Any) -> None:
    if (state.is_update or state.is_delete) and any(
        m.class_ in (User, ApiToken, Membership) for m in state.all_mappers
    ):
        state.session.info[_ACCOUNT_CHANGED] = True


@sa_event.listens_for(Session, "after_commit")
def _forget_cached_tokens(session: Session) -> None:
    if session.info.pop(_ACCOUNT_CHANGED, False):
        token_cache().clear()


@sa_event.listens_for(Session, "after_rollback")
def _forget_account_change(session: Session) -> None:
    session.info.pop(_ACCOUNT_CHANGED, None)


def open_session(
    session: Session,
    user: User | None,
    *,
    policy: Policy = Policy(),
    epro_link_id: int | None = None,
) -> tuple[WebSession, str]:
    """Start a browser session (always a new token: no fixation); return row and cookie value."""
    token_text = secrets.token_urlsafe(32)
    now = utcnow()
    hours = policy.session_max_hours
    row = WebSession(
        user_id=user.id if user else None,
        token_hash=sha256_hex(token_text),
        csrf_token=secrets.token_urlsafe(32),
        epro_link_id=epro_link_id,
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(hours=hours),
    )
    session.add(row)
    session.flush()
    return row, token_text


def session_for_cookie(
    session: Session, token_text: str, *, policy: Policy = Policy(), now: datetime | None = None
) -> WebSession | None:
    """Return the live session for a cookie, enforcing idle and absolute expiry."""
    now = now or utcnow()
    row = session.scalars(
        select(WebSession).where(WebSession.token_hash == sha256_hex(token_text))
    ).first()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    if row.last_seen_at + timedelta(minutes=policy.session_idle_minutes) <= now:
        return None
    return row


# Separation of duties between the sponsor's side and the sites: one account never works on
# both sides of a trial (a sponsor administrator cannot make itself a site investigator and
# unblind; a monitor does not verify what it entered).
SITE_ROLES = frozenset({Role.INVESTIGATOR, Role.COORDINATOR, Role.OUTCOME_ASSESSOR})
SPONSOR_SIDE_ROLES = frozenset(
    {
        Role.SPONSOR_ADMIN,
        Role.MONITOR,
        Role.DATA_MANAGER,
        Role.STATISTICIAN,
        Role.UNBLINDED_STATISTICIAN,
        Role.AUDITOR,
    }
)


def _side(role: Role) -> str | None:
    return "site" if role in SITE_ROLES else "sponsor" if role in SPONSOR_SIDE_ROLES else None


def grant_role(
    session: Session,
    actor: Actor,
    *,
    trial_id: int,
    user_id: int,
    role: str,
    site_id: int | None = None,
) -> Membership:
    """Give a user a role in a trial (site-bound roles need a site of that trial).

    Separation of duties (issue #14): nobody grants a role to themselves; one account never
    holds both a role that knows the allocation and a blinded one, nor a site role and a
    sponsor-side role, in the same trial (409). A grant of an unblinded role in a trial that
    blinds anyone, or one that changes what a user who held roles in the trial may know, waits
    inactive for a second administrator's approval (``approve_grant``) unless a superuser or
    the command line makes it. The command line is the server's operator, who could as well
    edit the database: its grants skip these rules and are audited as made by ``cli``.
    """
    try:
        role_enum = Role(role)
    except ValueError as exc:
        raise ValidationError("unknown role", {"role": [f"one of {', '.join(Role)}"]}) from exc
    if actor.via != "cli" and not actor.is_superuser:
        require(actor, "membership.manage", trial_id)
    if actor.via != "cli" and actor.user_id is not None and actor.user_id == user_id:
        raise PermissionDenied("nobody grants a role to themselves")
    with transaction(session):
        trial = session.get(Trial, trial_id)
        if trial is None:
            raise NotFound("trial not found")
        if session.get(User, user_id) is None:
            raise NotFound("user not found", {"user_id": ["no such user"]})
        if role_enum in SITE_BOUND_ROLES and site_id is None:
            raise ValidationError(f"role {role} needs a site", {"site": ["required for this role"]})
        if role_enum in TRIAL_WIDE_ROLES and site_id is not None:
            # (before: taken, and the grant read every site's exports and trail all the same)
            raise ValidationError(
                f"role {role} works on the whole trial, never one site",
                {"site": ["must be empty for this role"]},
            )
        if site_id is not None:
            site = session.get(Site, site_id)
            if site is None or site.trial_id != trial_id:
                raise ValidationError("unknown site", {"site": ["not a site of this trial"]})
        held = list(
            session.scalars(
                select(Membership).where(
                    Membership.user_id == user_id, Membership.trial_id == trial_id
                )
            )
        )
        blinded = blinded_roles(session, trial)
        if actor.via != "cli":  # the server's operator, trusted as the database owner is
            _check_duties(role_enum, [m for m in held if m.is_active or m.pending_since], blinded)
        existing = next(
            (m for m in held if m.role == role_enum.value and m.site_id == site_id), None
        )
        if existing is not None and (existing.is_active or existing.pending_since):
            raise Conflict("the user already holds this role")
        is_second_person_needed = not (actor.is_superuser or actor.via == "cli") and (
            (role_enum in UNBLINDED_ROLES and bool(blinded))
            or any(
                knows_allocation(Role(m.role), blinded) != knows_allocation(role_enum, blinded)
                for m in held
            )
        )
        membership = existing or Membership(
            user_id=user_id, trial_id=trial_id, site_id=site_id, role=role_enum.value
        )
        before = audit.snapshot(existing) if existing is not None else None
        membership.is_active = not is_second_person_needed
        membership.requested_by_id = actor.user_id
        membership.pending_since = utcnow() if is_second_person_needed else None
        membership.approved_by_id = None
        membership.approved_at = None
        action = "membership.request" if is_second_person_needed else "membership.grant"
        if existing is None:
            session.add(membership)
            audit.record_create(session, actor, action, membership)
        else:
            assert before is not None
            audit.record_update(session, actor, action, membership, before)
    return membership


def _check_duties(role: Role, held: list[Membership], blinded: frozenset[Role]) -> None:
    knows = knows_allocation(role, blinded)
    for m in held:
        other = Role(m.role)
        if knows_allocation(other, blinded) != knows:
            raise Conflict(
                f"the user holds {other.value} in this trial: one account never holds a role "
                "that knows the allocation and a blinded one in the same trial",
                conflicting_role=other.value,
            )
        if _side(other) is not None and _side(role) is not None and _side(other) != _side(role):
            raise Conflict(
                f"the user holds {other.value} in this trial: one account never works on both "
                "the sponsor's side and a site's side of a trial",
                conflicting_role=other.value,
            )


def approve_grant(
    session: Session, actor: Actor, *, trial_id: int, membership_id: int
) -> Membership:
    """Approve a pending grant (two-person rule): a second administrator of the trial, neither
    the one who asked nor the grantee, or a superuser. Audited as ``membership.approve``."""
    if actor.via != "cli" and not actor.is_superuser:
        require(actor, "membership.manage", trial_id)
    with transaction(session):
        membership = lock_row(session, Membership, membership_id)
        if membership is None or membership.trial_id != trial_id:
            raise NotFound("membership not found")
        if membership.pending_since is None:
            raise Conflict("this grant is not waiting for approval")
        if actor.user_id is not None and actor.user_id in (
            membership.requested_by_id,
            membership.user_id,
        ):
            raise PermissionDenied(
                "a second administrator approves: not the one who asked for it, nor the grantee"
            )
        requester = membership.requested_by_id
        if actor.user_id is not None and not actor.is_superuser and requester is not None and (
            appointed_by(session, trial_id, actor.user_id, requester)
            or appointed_by(session, trial_id, requester, actor.user_id)
        ):
            raise PermissionDenied(
                "a second administrator approves: not one whose administrator role goes back "
                "to the one who asked, nor one who appointed them (an account one of them "
                "invited could be their own)"
            )
        trial = session.get(Trial, trial_id)
        assert trial is not None
        held = session.scalars(
            select(Membership).where(
                Membership.user_id == membership.user_id,
                Membership.trial_id == trial_id,
                Membership.is_active.is_(True),
                Membership.id != membership.id,
            )
        ).all()
        _check_duties(Role(membership.role), list(held), blinded_roles(session, trial))
        before = audit.snapshot(membership)
        membership.is_active = True
        membership.pending_since = None
        membership.approved_by_id = actor.user_id
        membership.approved_at = utcnow()
        audit.record_update(session, actor, "membership.approve", membership, before)
    return membership


def appointed_by(
    session: Session, trial_id: int, user_id: int, requester_id: int | None
) -> bool:
    """Whether ``user_id``'s sponsor-admin role in the trial was granted by ``requester_id``,
    directly or through administrators that one appointed (A invites B, B invites D: D is A's);
    an appointment revoked since still counts (revoking a link does not make two people of
    one)."""
    if requester_id is None:
        return False
    seen: set[int] = set()
    frontier = {user_id}
    while frontier:
        seen |= frontier
        granters = set(
            session.scalars(
                select(Membership.requested_by_id).where(
                    Membership.user_id.in_(frontier),
                    Membership.trial_id == trial_id,
                    Membership.role == Role.SPONSOR_ADMIN.value,
                    Membership.requested_by_id.is_not(None),
                )
            )
        )
        if requester_id in granters:
            return True
        frontier = {g for g in granters if g is not None} - seen
    return False


def revoke_role(session: Session, actor: Actor, *, trial_id: int, membership_id: int) -> None:
    if actor.via != "cli" and not actor.is_superuser:
        require(actor, "membership.manage", trial_id)
    with transaction(session):
        membership = lock_row(session, Membership, membership_id)
        if membership is None or membership.trial_id != trial_id:
            raise NotFound("membership not found")
        before = audit.snapshot(membership)
        membership.is_active = False
        membership.pending_since = None  # revoking a pending grant withdraws the request
        audit.record_update(session, actor, "membership.revoke", membership, before)


__all__ = ["SYSTEM", "Policy"]
