"""Trials and sites."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from dtx_trials.db import loaded, lock_row, transaction
from dtx_trials.models import Membership, ProtocolVersion, Site, Trial
from dtx_trials.models.users import Role
from dtx_trials.services import audit
from dtx_trials.services.access import Actor, require
from dtx_trials.services.errors import Conflict, NotFound, PermissionDenied, ValidationError
from dtx_trials.services.protocols import note_version_sha
from protocols.countries import alpha3
from protocols.validation import is_iana_timezone

CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")


def _check_code(code: str, field: str = "code") -> str:
    if not CODE_RE.match(code or ""):
        raise ValidationError(f"invalid {field}", {field: ["1-40 letters, digits, '-' or '_'"]})
    return code


def create_trial(session: Session, actor: Actor, *, code: str, title: str) -> Trial:
    """Create a draft trial; its creator becomes its sponsor admin."""
    if not (
        actor.is_superuser
        or actor.via == "cli"
        or any(g.role == Role.SPONSOR_ADMIN for g in actor.grants)
    ):
        raise PermissionDenied("only sponsor administrators create trials")
    _check_code(code)
    if not title.strip():
        raise ValidationError("title is required", {"title": ["must not be blank"]})
    with transaction(session):
        if session.scalars(select(Trial).where(Trial.code == code)).first():
            raise Conflict(f"trial code '{code}' exists")
        trial = Trial(code=code, title=title.strip())
        session.add(trial)
        audit.record_create(session, actor, "trial.create", trial)
        if actor.user_id is not None:
            membership = Membership(
                user_id=actor.user_id, trial_id=trial.id, role=Role.SPONSOR_ADMIN.value
            )
            session.add(membership)
            audit.record_create(session, actor, "membership.grant", membership)
    return trial


# built once per process (every API request of a trial runs it)
_TRIAL_BY_CODE = (
    select(Trial, ProtocolVersion.sha256)
    .outerjoin(ProtocolVersion, ProtocolVersion.id == Trial.active_protocol_version_id)
    .where(Trial.code == bindparam("code"))
)
_VERSION_SHA256 = ProtocolVersion.__table__.c.sha256


def get_trial(session: Session, actor: Actor, code: str, action: str = "trial.read") -> Trial:
    """Return the trial by code if the actor may perform `action` on it (else 404/403)."""
    # Core on the session's connection (after the flush a query's autoflush does): the ORM's
    # loading of one row costs more than the statement's round trip (every request of a trial
    # runs this)
    session.flush()
    row = session.connection().execute(_TRIAL_BY_CODE, {"code": code}).first()
    if row is None:
        raise NotFound("trial not found")
    values = row._mapping
    trial = loaded(session, Trial, values)
    note_version_sha(session, trial.active_protocol_version_id, values[_VERSION_SHA256])
    if not actor.is_superuser or action != "trial.read":
        require(actor, action, trial.id)
    return trial


def list_trials(session: Session, actor: Actor) -> list[Trial]:
    stmt = select(Trial).order_by(Trial.code)
    if not actor.is_superuser:
        ids = {g.trial_id for g in actor.grants}
        stmt = stmt.where(Trial.id.in_(ids))
    return list(session.scalars(stmt))


def _check_timezone(name: object) -> None:
    if not isinstance(name, str) or not is_iana_timezone(name):
        raise ValidationError(
            "unknown time zone",
            {"timezone": [f"{name!r} is not an IANA time zone name (e.g. Asia/Shanghai)"]},
        )


def _check_country(code: object) -> None:
    """A site's country is an ISO 3166-1 alpha-2 code or none (exports map it to alpha-3)."""
    if code is not None and (not isinstance(code, str) or alpha3(code) is None):
        raise ValidationError(
            "unknown country",
            {"country": [f"{code!r} is not an ISO 3166-1 alpha-2 country code (e.g. CN, HK)"]},
        )


def create_site(session: Session, actor: Actor, trial: Trial, data: Mapping[str, Any]) -> Site:
    """Add a site; refused while the trial runs if its protocol says sites.allow_runtime_sites:
    false (the protocol's initial sites are created when it is activated)."""
    require(actor, "site.manage", trial.id)
    code = _check_code(str(data.get("code", "")))
    _check_timezone(data.get("timezone") or "UTC")
    _check_country(data.get("country"))
    if trial.active_protocol_version_id is not None:
        from dtx_trials.services.protocols import active_protocol

        _, protocol = active_protocol(session, trial)
        if not protocol.sites.allow_runtime_sites:
            raise Conflict(
                f"the protocol of {trial.code} does not allow adding sites while the trial runs "
                "(sites.allow_runtime_sites: false); amend the protocol's sites instead"
            )
    with transaction(session):
        if session.scalars(
            select(Site).where(Site.trial_id == trial.id, Site.code == code)
        ).first():
            raise Conflict(f"site '{code}' exists in {trial.code}")
        site = Site(
            trial_id=trial.id,
            code=code,
            name=data["name"],
            name_zh=data.get("name_zh"),
            country=data.get("country"),
            timezone=data.get("timezone") or "UTC",
        )
        session.add(site)
        audit.record_create(session, actor, "site.create", site, site_id=None)
    return site


def update_site(
    session: Session,
    actor: Actor,
    trial: Trial,
    site_code: str,
    changes: Mapping[str, Any],
    reason: str | None = None,
) -> Site:
    with transaction(session):
        site = get_site(session, actor, trial, site_code, lock=True)
        require(actor, "site.manage", trial.id, site.id)
        if "timezone" in changes:
            _check_timezone(changes["timezone"])
        if "country" in changes:
            _check_country(changes["country"])
        before = audit.snapshot(site)
        for name in ("name", "name_zh", "country", "timezone", "is_active"):
            if name in changes:
                setattr(site, name, changes[name])
        audit.record_update(session, actor, "site.update", site, before, reason=reason)
    return site


def get_site(
    session: Session, actor: Actor, trial: Trial, site_code: str, *, lock: bool = False
) -> Site:
    site = session.scalars(
        select(Site).where(Site.trial_id == trial.id, Site.code == site_code)
    ).first()
    if site is None:
        raise NotFound("site not found")
    require(actor, "trial.read", trial.id, site.id)
    if lock:
        locked = lock_row(session, Site, site.id)
        assert locked is not None  # the row was just read inside this transaction
        return locked
    return site


def list_sites(session: Session, actor: Actor, trial: Trial) -> list[Site]:
    require(actor, "trial.read", trial.id)
    return list(session.scalars(select(Site).where(Site.trial_id == trial.id).order_by(Site.code)))


def list_memberships(session: Session, actor: Actor, trial: Trial) -> list[Membership]:
    require(actor, "membership.manage", trial.id)
    return list(
        session.scalars(
            select(Membership).where(Membership.trial_id == trial.id).order_by(Membership.id)
        )
    )
