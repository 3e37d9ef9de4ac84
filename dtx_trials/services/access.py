"""Who may do what: one permission function, `can(actor, action, trial_id, site_id)`.

Permissions are granted by role within a trial, optionally limited to one site. A route calls
`require(...)` (or `visible_sites(...)` for lists) before touching data. To avoid revealing that
a record exists, an actor with no role at all in the trial — or with a site-bound role at a
different site — gets 404; an actor who can see the trial but lacks the action gets 403.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import cast

from dtx_trials.models.users import Role
from dtx_trials.services.errors import NotFound, PermissionDenied

R = Role
_NOTHING_HELD: Mapping[Role, frozenset[int] | None] = {}

# Action -> roles that hold it. One table, read by every route (through `can`).
ACTION_ROLES: dict[str, frozenset[Role]] = {
    "trial.read": frozenset(R),
    "trial.manage": frozenset({R.SPONSOR_ADMIN}),
    "protocol.manage": frozenset({R.SPONSOR_ADMIN}),
    "site.manage": frozenset({R.SPONSOR_ADMIN}),
    "membership.manage": frozenset({R.SPONSOR_ADMIN}),
    "user.manage": frozenset({R.SPONSOR_ADMIN}),
    "audit.read": frozenset({R.AUDITOR}),
    "participant.read": frozenset(
        {
            R.INVESTIGATOR,
            R.COORDINATOR,
            R.OUTCOME_ASSESSOR,
            R.MONITOR,
            R.DATA_MANAGER,
            R.SPONSOR_ADMIN,
            R.AUDITOR,
        }
    ),
    "participant.identify": frozenset({R.INVESTIGATOR, R.COORDINATOR}),
    "participant.write": frozenset({R.INVESTIGATOR, R.COORDINATOR}),
    "randomize": frozenset({R.INVESTIGATOR, R.COORDINATOR}),
    "allocation.read": frozenset({R.UNBLINDED_STATISTICIAN}),
    "allocation.upload": frozenset({R.UNBLINDED_STATISTICIAN}),
    "unblind.emergency": frozenset({R.INVESTIGATOR}),
    "unblinding.read": frozenset({R.SPONSOR_ADMIN, R.MONITOR, R.INVESTIGATOR, R.AUDITOR}),
    "notification.read": frozenset({R.SPONSOR_ADMIN, R.AUDITOR}),
    "form.read": frozenset(
        {R.INVESTIGATOR, R.COORDINATOR, R.OUTCOME_ASSESSOR, R.MONITOR, R.DATA_MANAGER, R.AUDITOR}
    ),
    # A participant grant only ever comes from an ePRO link session (see `can`); an outcome
    # assessor writes only the forms the protocol gives it (respondent: outcome_assessor) and
    # site staff never those (services/forms.py).
    "form.write": frozenset({R.INVESTIGATOR, R.COORDINATOR, R.OUTCOME_ASSESSOR, R.PARTICIPANT}),
    "form.sign": frozenset({R.INVESTIGATOR}),
    "form.verify": frozenset({R.MONITOR}),
    "form.lock": frozenset({R.DATA_MANAGER}),
    "query.raise": frozenset({R.MONITOR, R.DATA_MANAGER}),
    "query.answer": frozenset({R.INVESTIGATOR, R.COORDINATOR}),
    "query.close": frozenset({R.MONITOR, R.DATA_MANAGER}),
    "epro.issue": frozenset({R.INVESTIGATOR, R.COORDINATOR}),
    "deviation.review": frozenset({R.MONITOR}),
    "consent.countersign": frozenset({R.INVESTIGATOR}),
    "safety.acknowledge": frozenset({R.INVESTIGATOR, R.COORDINATOR}),
    "safety.report": frozenset({R.INVESTIGATOR}),
    # a participant grant ingests only as the DTx app (its own data) or a service credential
    "device.ingest": frozenset({R.DATA_MANAGER, R.COORDINATOR, R.PARTICIPANT}),
    "device.read": frozenset({R.MONITOR, R.DATA_MANAGER, R.INVESTIGATOR, R.COORDINATOR}),
    "service.manage": frozenset({R.SPONSOR_ADMIN}),
    "analysis.run": frozenset({R.STATISTICIAN, R.UNBLINDED_STATISTICIAN}),
    "export.run": frozenset({R.STATISTICIAN, R.UNBLINDED_STATISTICIAN, R.DATA_MANAGER}),
    "coding.dictionary": frozenset({R.SPONSOR_ADMIN, R.DATA_MANAGER}),
    "coding.code": frozenset({R.DATA_MANAGER}),
    "coding.read": frozenset({R.DATA_MANAGER, R.SPONSOR_ADMIN, R.MONITOR}),
}

# What a participant grant allows only through an ePRO link session, which also pins the
# subject, visit and form (services/epro.py), or the DTx app's own token (services/apps.py,
# pinned to the participant): an account holding a participant membership never writes forms
# or device data through the staff API or pages.
PARTICIPANT_CHANNELS: dict[str, frozenset[str]] = {
    "form.write": frozenset({"epro", "app"}),
    "device.ingest": frozenset({"app", "service"}),
}

# Roles whose purpose is to know the allocation: never blinded, and granted only under the
# two-person rule (services/accounts.py).
UNBLINDED_ROLES = frozenset({R.UNBLINDED_STATISTICIAN})

# The protocol's words for who is blinded (``blinding.blinded_roles``) and the account roles
# each covers; "sponsor" is the sponsor's side of the trial.
PROTOCOL_BLINDED_ROLES: dict[str, frozenset[Role]] = {
    "participant": frozenset({R.PARTICIPANT}),
    "investigator": frozenset({R.INVESTIGATOR}),
    "coordinator": frozenset({R.COORDINATOR}),
    "outcome_assessor": frozenset({R.OUTCOME_ASSESSOR}),
    "statistician": frozenset({R.STATISTICIAN}),
    "sponsor": frozenset({R.SPONSOR_ADMIN, R.MONITOR, R.DATA_MANAGER, R.AUDITOR}),
}
ALL_BLINDABLE_ROLES = frozenset(R) - UNBLINDED_ROLES


def blinded_account_roles(protocol_roles: Iterable[str]) -> frozenset[Role]:
    """The account roles a protocol's ``blinding.blinded_roles`` blinds."""
    return frozenset(r for name in protocol_roles for r in PROTOCOL_BLINDED_ROLES[name])


def knows_allocation(role: Role, blinded: frozenset[Role]) -> bool:
    """Whether holders of ``role`` may learn arms in a trial that blinds ``blinded``."""
    return role in UNBLINDED_ROLES or role not in blinded


@dataclass(frozen=True)
class Grant:
    trial_id: int
    site_id: int | None
    role: Role


class Grants(tuple[Grant, ...]):
    """An actor's grants, indexed once (`by_trial`): every permission check and every audit
    event's role reads the index, so a monitor or investigator granted at hundreds of sites pays
    for a lookup, not for a scan of every grant. The same object passes from actor to actor
    (`dataclasses.replace`: a cached token's actor made into each request's), and so does its
    index."""

    @functools.cached_property
    def by_trial(self) -> dict[int, dict[Role, frozenset[int] | None]]:
        """Per trial, each role held with the sites it is held at (None: trial-wide)."""
        sites: dict[int, dict[Role, set[int] | None]] = {}
        for grant in self:
            held = sites.setdefault(grant.trial_id, {})
            if grant.site_id is None:
                held[grant.role] = None
            elif grant.role not in held:
                held[grant.role] = {grant.site_id}
            elif (at := held[grant.role]) is not None:
                at.add(grant.site_id)
        return {
            trial_id: {role: None if at is None else frozenset(at) for role, at in held.items()}
            for trial_id, held in sites.items()
        }


@dataclass(frozen=True)
class Actor:
    """The authenticated caller of a use case, with its grants loaded once per request."""

    user_id: int | None
    username: str
    printed_name: str
    grants: tuple[Grant, ...] = ()  # held as `Grants` (indexed)
    is_superuser: bool = False
    request_id: str | None = None
    via: str = "api"  # api | web | cli | epro | system
    # how this caller authenticated, hashed into every event it writes: token:<id> (API),
    # session:<id> (browser or ePRO); None for cli/system actors
    auth_ref: str | None = None
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if type(self.grants) is not Grants:
            object.__setattr__(self, "grants", Grants(self.grants))

    def held_in(self, trial_id: int) -> Mapping[Role, frozenset[int] | None]:
        """The roles held in the trial, each with the sites it is held at (None: trial-wide)."""
        return cast(Grants, self.grants).by_trial.get(trial_id, _NOTHING_HELD)

    def roles_in(self, trial_id: int) -> frozenset[Role]:
        return frozenset(self.held_in(trial_id))

    def roles_at(self, trial_id: int, site_id: int | None) -> frozenset[Role]:
        """The roles held at the site: trial-wide or granted there (trial-wide only for
        ``site_id`` None)."""
        return frozenset(
            role
            for role, sites in self.held_in(trial_id).items()
            if sites is None or (site_id is not None and site_id in sites)
        )

    def primary_role(self, trial_id: int | None) -> str | None:
        if trial_id is None:
            return "superuser" if self.is_superuser else None
        held = self.held_in(trial_id)
        return min(held) if held else None


SYSTEM = Actor(user_id=None, username="system", printed_name="System", via="system")


def command_line(trial_id: int | None = None, role: Role | str | None = None) -> Actor:
    """The command line's actor: it runs on the server itself. Without a role it is the
    operator setting the server up (a superuser); with one it acts in that role of one trial
    and nothing else."""
    if role is None:
        return Actor(None, "cli", "Command line", via="cli", is_superuser=True)
    if trial_id is None:
        raise ValueError("a role is granted in a trial")
    return Actor(None, "cli", "Command line", (Grant(trial_id, None, Role(role)),), via="cli")


def with_role(actor: Actor, trial_id: int, role: Role | str) -> Actor:
    """The actor with one more trial-wide grant (the command line acting as a trial's sponsor
    admin after creating the trial, say)."""
    return replace(actor, grants=(*actor.grants, Grant(trial_id, None, Role(role))))


def can(actor: Actor, action: str, trial_id: int | None, site_id: int | None = None) -> bool:
    """Return whether the actor may perform `action` on a resource of this trial (and site)."""
    roles = ACTION_ROLES[action]
    if trial_id is None:
        return actor.is_superuser
    for role, sites in actor.held_in(trial_id).items():
        if role not in roles:
            continue
        if (
            role == R.PARTICIPANT
            and action in PARTICIPANT_CHANNELS
            and actor.via not in PARTICIPANT_CHANNELS[action]
        ):
            continue
        if sites is None or site_id is None or site_id in sites:
            return True
    return False


def require(actor: Actor, action: str, trial_id: int, site_id: int | None = None) -> None:
    """Raise 404 if the resource is invisible to the actor, 403 if visible but not allowed."""
    if can(actor, action, trial_id, site_id):
        return
    if not _sees(actor, trial_id, site_id):
        raise NotFound("not found")
    raise PermissionDenied(f"your role does not allow '{action}' here")


def _sees(actor: Actor, trial_id: int, site_id: int | None) -> bool:
    return any(
        sites is None or site_id is None or site_id in sites
        for sites in actor.held_in(trial_id).values()
    )


def visible_sites(actor: Actor, action: str, trial_id: int) -> frozenset[int] | None:
    """Return the sites the actor may act on for `action` (None = every site), or raise."""
    roles = ACTION_ROLES[action]
    visible: set[int] = set()
    for role, sites in actor.held_in(trial_id).items():
        if role in roles:
            if sites is None:
                return None
            visible |= sites
    if not visible:
        require(actor, action, trial_id)
    return frozenset(visible)


def sees_arms(actor: Actor, trial_id: int, blinded: frozenset[Role]) -> bool:
    """Return whether responses for this actor may carry real arm codes: none of its roles in
    the trial is blinded (a superuser without a role only in a trial that blinds nobody)."""
    roles = actor.roles_in(trial_id)
    if not roles:
        return actor.is_superuser and not blinded
    return all(knows_allocation(role, blinded) for role in roles)
