"""Protocol versions: upload (validate + store), diff, and activate with the amendment gate."""

from __future__ import annotations

import secrets
from collections.abc import Collection
from pathlib import Path
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.orm import Session, SessionTransaction

from dtx_trials.db import lock_row, transaction, utcnow
from dtx_trials.models import (
    Allocation,
    FormRecord,
    Membership,
    Participant,
    ProtocolVersion,
    RandomizationState,
    Site,
    Trial,
    User,
)
from dtx_trials.models.users import Role
from dtx_trials.services import audit
from dtx_trials.services.access import (
    ALL_BLINDABLE_ROLES,
    UNBLINDED_ROLES,
    Actor,
    blinded_account_roles,
    knows_allocation,
    require,
    with_role,
)
from dtx_trials.services.errors import Conflict, NotFound, ValidationError
from protocols.canonical import from_canonical_dict, protocol_sha256, to_canonical_dict
from protocols.diff import Change, check_amendment, diff_protocols
from protocols.loader import load_protocol_report
from protocols.model import Protocol
from randomization.draws import RNG_ALGORITHM


def issues_payload(issues: Collection[Any]) -> list[dict[str, Any]]:
    return [
        {
            "file": i.file,
            "line": i.line,
            "column": i.column,
            "path": i.path,
            "message": i.message,
            "severity": i.severity,
        }
        for i in issues
    ]


def parse_protocol(text: str, source_name: str) -> Protocol:
    """Load a protocol document; a bad document is a 422 listing every issue with its line."""
    result = load_protocol_report(text, source_name)
    if result.protocol is None:
        raise ValidationError(
            f"protocol has {len(result.errors)} error(s)",
            {"protocol": [str(i) for i in result.errors]},
            issues=issues_payload(result.errors),
        )
    return result.protocol


_PROTOCOLS: dict[str, Protocol] = {}


def protocol_of(version: ProtocolVersion) -> Protocol:
    """Return the typed Protocol stored in a version row (memoised by its SHA-256)."""
    protocol = _PROTOCOLS.get(version.sha256)
    if protocol is None:
        protocol = from_canonical_dict(version.content)
        if len(_PROTOCOLS) > 256:
            _PROTOCOLS.clear()
        _PROTOCOLS[version.sha256] = protocol
    return protocol


# {protocol version id: sha256} learnt by the current transaction from a query it ran anyway
# (the trial's or the participant's row joined with the version's hash): the parsed protocol
# is then taken from the memo without loading the version row (tens of KB of JSON). Ids are
# only trusted within one transaction (a deleted and re-created row may reuse an id).
_VERSION_SHAS = "dtx_protocol_version_shas"


def note_version_sha(session: Session, version_id: int | None, sha256: str | None) -> None:
    if version_id is not None and sha256:
        session.info.setdefault(_VERSION_SHAS, {})[version_id] = sha256


def protocol_by_version_id(session: Session, version_id: int) -> Protocol:
    """The parsed protocol of a version: from the memo when this transaction knows the
    version's hash, else from its row."""
    sha256 = session.info.get(_VERSION_SHAS, {}).get(version_id)
    if sha256 is not None:
        protocol = _PROTOCOLS.get(sha256)
        if protocol is not None:
            return protocol
    version = session.get(ProtocolVersion, version_id)
    if version is None:
        raise NotFound(f"protocol version {version_id} not found")
    return protocol_of(version)


# {protocol version id: {version_no, version}} as responses show a version (`version_ref`),
# learnt from a query the request ran anyway; kept for the session's life (one request: the
# scoped session is removed at its end), so a response built after the commit needs no query
VERSION_REFS = "dtx_protocol_version_refs"


def note_version_ref(
    session: Session, version_id: int | None, version_no: int | None, version: str | None
) -> None:
    if version_id is not None and version_no is not None:
        refs = session.info.setdefault(VERSION_REFS, {})
        refs[version_id] = {"version_no": version_no, "version": version}


@sa_event.listens_for(Session, "after_transaction_end")
def _forget_version_shas(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_VERSION_SHAS, None)


def active_protocol_model(session: Session, trial: Trial) -> Protocol:
    """The trial's active protocol (the parsed model only; see `active_protocol`)."""
    if trial.active_protocol_version_id is None:
        raise Conflict(f"trial {trial.code} has no active protocol version")
    return protocol_by_version_id(session, trial.active_protocol_version_id)


def active_protocol(session: Session, trial: Trial) -> tuple[ProtocolVersion, Protocol]:
    if trial.active_protocol_version_id is None:
        raise Conflict(f"trial {trial.code} has no active protocol version")
    version = session.get(ProtocolVersion, trial.active_protocol_version_id)
    assert version is not None  # foreign key
    return version, protocol_of(version)


def blinded_roles(session: Session, trial: Trial) -> frozenset[Role]:
    """The account roles that must not learn this trial's allocation, as its active protocol
    declares them (``blinding.blinded_roles``); before any activation every role but the
    unblinded ones, since the protocol to come may blind them (an unblinded role granted then
    waits for a second administrator, as in a blinded trial: before, a new trial counted as
    open label and such a grant was active at once, and stayed active when a double-blind
    protocol was activated)."""
    if trial.active_protocol_version_id is None:
        return ALL_BLINDABLE_ROLES
    return blinded_account_roles(active_protocol_model(session, trial).blinding.blinded_roles)


def comparative_review_roles(session: Session, trial: Trial) -> frozenset[Role]:
    """The blinded account roles the active protocol allows a comparative blinded run."""
    if trial.active_protocol_version_id is None:
        return frozenset()
    return blinded_account_roles(active_protocol_model(session, trial).blinding.comparative_review)


def list_versions(session: Session, actor: Actor, trial: Trial) -> list[ProtocolVersion]:
    require(actor, "trial.read", trial.id)
    return list(
        session.scalars(
            select(ProtocolVersion)
            .where(ProtocolVersion.trial_id == trial.id)
            .order_by(ProtocolVersion.version_no)
        )
    )


def get_version(session: Session, actor: Actor, trial: Trial, version_no: int) -> ProtocolVersion:
    require(actor, "trial.read", trial.id)
    version = session.scalars(
        select(ProtocolVersion).where(
            ProtocolVersion.trial_id == trial.id, ProtocolVersion.version_no == version_no
        )
    ).first()
    if version is None:
        raise NotFound(f"protocol version {version_no} not found")
    return version


def upload_version(
    session: Session, actor: Actor, trial: Trial, text: str, source_name: str = "protocol.yaml"
) -> tuple[ProtocolVersion, bool]:
    """Store a validated protocol as a new draft version; (version, created).

    Uploading content identical to an existing version (same SHA-256 of the canonical form)
    returns that version instead of a duplicate.
    """
    require(actor, "protocol.manage", trial.id)
    protocol = parse_protocol(text, source_name)
    if protocol.code != trial.code:
        raise ValidationError(
            "protocol code does not match the trial",
            {"code": [f"expected {trial.code}, found {protocol.code}"]},
        )
    sha = protocol_sha256(protocol)
    with transaction(session):
        lock_row(session, Trial, trial.id)
        existing = session.scalars(
            select(ProtocolVersion).where(
                ProtocolVersion.trial_id == trial.id, ProtocolVersion.sha256 == sha
            )
        ).first()
        if existing is not None:
            return existing, False
        last = (
            session.scalar(
                select(func.max(ProtocolVersion.version_no)).where(
                    ProtocolVersion.trial_id == trial.id
                )
            )
            or 0
        )
        version = ProtocolVersion(
            trial_id=trial.id,
            version_no=last + 1,
            sha256=sha,
            status="draft",
            source_name=Path(source_name).name[:300],
            source_text=text,
            content=to_canonical_dict(protocol),
            created_by_id=actor.user_id,
        )
        session.add(version)
        audit.record_create(
            session, actor, "protocol.upload", version, reason=f"protocol {protocol.version}"
        )
    return version, True


def diff_versions(
    session: Session, actor: Actor, trial: Trial, old_no: int, new_no: int
) -> list[Change]:
    old = protocol_of(get_version(session, actor, trial, old_no))
    new = protocol_of(get_version(session, actor, trial, new_no))
    return diff_protocols(old, new)


def fields_with_data(session: Session, trial_id: int) -> set[str]:
    """Return the ids of fields holding a value in any form record of the trial."""
    fields: set[str] = set()
    rows = session.scalars(
        select(FormRecord.data)
        .join(Participant, Participant.id == FormRecord.participant_id)
        .where(Participant.trial_id == trial_id)
    )
    for data in rows:
        fields.update(k for k, v in (data or {}).items() if v not in (None, "", []))
    return fields


def _refuse_mixed_blinding(session: Session, trial: Trial, blinded: frozenset[Role]) -> None:
    """Refuse a blinding that would leave one account holding both a role that knows the
    allocation and a blinded one (services/accounts.py refuses such grants one by one)."""
    knows: dict[int, set[bool]] = {}
    for user_id, role in session.execute(
        select(Membership.user_id, Membership.role).where(
            Membership.trial_id == trial.id, Membership.is_active.is_(True)
        )
    ):
        knows.setdefault(user_id, set()).add(knows_allocation(Role(role), blinded))
    mixed = sorted(user_id for user_id, states in knows.items() if len(states) > 1)
    if mixed:
        raise Conflict(
            "under this protocol's blinding some accounts would hold both a role that knows "
            "the allocation and a blinded one: revoke one of their roles first",
            user_ids=mixed,
        )


def _pend_unapproved_unblinded(session: Session, actor: Actor, trial: Trial) -> None:
    """A version that blinds anyone: an unblinded role granted while the trial blinded nobody
    (live at once, by one administrator) waits for a second administrator's approval from now
    on, as one granted now would (before: it stayed live when an open-label version gave way
    to a blinded one). Grants a superuser or the command line made, or a second administrator
    approved, stand."""
    now = utcnow()
    for membership in session.scalars(
        select(Membership)
        .join(User, User.id == Membership.requested_by_id)
        .where(
            Membership.trial_id == trial.id,
            Membership.is_active.is_(True),
            Membership.role.in_([r.value for r in UNBLINDED_ROLES]),
            Membership.approved_by_id.is_(None),
            User.is_superuser.is_(False),
        )
        .order_by(Membership.id)
    ):
        before = audit.snapshot(membership)
        membership.is_active = False
        membership.pending_since = now
        audit.record_update(
            session, actor, "membership.request", membership, before,
            reason="the trial's protocol now blinds roles: an unblinded role granted while it "
                   "blinded none waits for a second administrator's approval",
        )


def activate_version(
    session: Session, actor: Actor, trial: Trial, version_no: int, accepted: Collection[str] = ()
) -> tuple[ProtocolVersion, list[Change]]:
    """Make a version the trial's active protocol (an amendment when one is active already).

    Changes that would break captured data are refused with their ids unless listed in
    `accepted`. Activation creates the initial sites and the randomization state (with a new
    32-byte secret) when the trial has none.
    """
    require(actor, "protocol.manage", trial.id)
    with transaction(session):
        locked = lock_row(session, Trial, trial.id)
        assert locked is not None
        version = get_version(session, actor, locked, version_no)
        new = protocol_of(version)
        changes: list[Change] = []
        is_amendment = locked.active_protocol_version_id is not None
        if locked.active_protocol_version_id == version.id:
            raise Conflict(f"version {version_no} is already active")
        new_blinded = blinded_account_roles(new.blinding.blinded_roles)
        _refuse_mixed_blinding(session, locked, new_blinded)
        if new_blinded:
            _pend_unapproved_unblinded(session, actor, locked)
        if locked.active_protocol_version_id is not None:
            current = session.get(ProtocolVersion, locked.active_protocol_version_id)
            assert current is not None
            old = protocol_of(current)
            has_allocations = (
                session.scalar(
                    select(func.count())
                    .select_from(Allocation)
                    .where(Allocation.trial_id == locked.id)
                )
                > 0
            )
            blocking = check_amendment(
                old,
                new,
                fields_with_data=fields_with_data(session, locked.id),
                has_allocations=bool(has_allocations),
                accepted=accepted,
            )
            if blocking:
                raise Conflict(
                    "the amendment would break captured data; accept each change explicitly",
                    {
                        "breaking": [
                            f"{c.id}: {c.breaking_reason or c.description}" for c in blocking
                        ]
                    },
                    breaking_ids=[c.id for c in blocking],
                )
            changes = diff_protocols(old, new)
            before = audit.snapshot(current)
            current.status = "superseded"
            audit.record_update(session, actor, "protocol.supersede", current, before)
        before_v = audit.snapshot(version)
        version.status = "active"
        version.activated_at = utcnow()
        version.accepted_migrations = sorted(accepted)
        audit.record_update(
            session,
            actor,
            "protocol.activate",
            version,
            before_v,
            reason=", ".join(sorted(accepted)) or None,
        )
        before_t = audit.snapshot(locked)
        locked.active_protocol_version_id = version.id
        locked.blinding = new.blinding.level
        locked.status = "active"
        locked.title = new.title.en[:300]
        audit.record_update(session, actor, "trial.protocol_activated", locked, before_t)
        _ensure_sites(session, actor, locked, new)
        _ensure_randomization_state(session, actor, locked, version)
        if is_amendment:
            _reach_participants(session, actor, locked, version, new)
    return version, changes


def _reach_participants(
    session: Session, actor: Actor, trial: Trial, version: ProtocolVersion, protocol: Protocol
) -> None:
    """An amendment reaches the participants already in the trial by the rule it declares
    (``amendment.transition``); the outcome is one audit event of the activation."""
    from dtx_trials.services import participants

    counts = participants.apply_amendment(session, actor, trial)
    audit.record_event(
        session, actor, "protocol.amendment_applied", entity_type="protocol_version",
        entity_id=version.id, trial_id=trial.id,
        details={"transition": participants.amendment_transition(protocol), **counts},
    )


def _ensure_sites(session: Session, actor: Actor, trial: Trial, protocol: Protocol) -> None:
    existing = set(session.scalars(select(Site.code).where(Site.trial_id == trial.id)))
    for spec in protocol.sites.initial_sites:
        if spec.code in existing:
            continue
        site = Site(
            trial_id=trial.id,
            code=spec.code,
            name=spec.name,
            country=spec.country,
            timezone=spec.timezone or "UTC",
        )
        session.add(site)
        audit.record_create(
            session, actor, "site.create", site, site_id=None, reason="initial site of the protocol"
        )


def _ensure_randomization_state(
    session: Session, actor: Actor, trial: Trial, version: ProtocolVersion
) -> None:
    state = session.scalars(
        select(RandomizationState).where(RandomizationState.trial_id == trial.id)
    ).first()
    if state is None:
        state = RandomizationState(
            trial_id=trial.id,
            secret=secrets.token_hex(32),
            model_version=version.id,
            rng_algorithm=RNG_ALGORITHM,
        )
        session.add(state)
        audit.record_create(session, actor, "randomization.state_created", state)


def load_library_file(session: Session, actor: Actor, path: Path) -> str:
    """Load one example protocol: create its trial if needed, upload and activate the version."""
    from dtx_trials.services import trials as trial_service

    text = path.read_text(encoding="utf-8")
    protocol = parse_protocol(text, str(path))
    trial = session.scalars(select(Trial).where(Trial.code == protocol.code)).first()
    if trial is None:
        trial = trial_service.create_trial(
            session, actor, code=protocol.code, title=protocol.title.en[:300]
        )
    admin = actor if actor.via != "cli" else with_role(actor, trial.id, "sponsor_admin")
    version, created = upload_version(session, admin, trial, text, path.name)
    if trial.active_protocol_version_id == version.id:
        return f"{protocol.code}: version {version.version_no} already active ({path.name})"
    activate_version(session, admin, trial, version.version_no)
    return (
        f"{protocol.code}: version {version.version_no} "
        f"{'loaded and ' if created else ''}activated ({path.name})"
    )

