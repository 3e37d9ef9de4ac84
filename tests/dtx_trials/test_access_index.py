"""ACC-01: the actor's grants are indexed once (`Actor.held_in`) and every permission answer is
the one a scan of every grant gives: `can`, `require`'s 404/403 split, `visible_sites`, the
roles at a site and the trail's role, for any set of grants (trial-wide and site-bound, several
trials, the participant channels' rule)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtx_trials.models.users import Role
from dtx_trials.services import access
from dtx_trials.services.access import ACTION_ROLES, PARTICIPANT_CHANNELS, Actor, Grant
from dtx_trials.services.errors import NotFound, PermissionDenied

TRIALS = (1, 2)
SITES = (None, 10, 11, 12)
VIAS = ("api", "web", "epro", "app", "service", "cli")

grants = st.lists(
    st.builds(Grant, st.sampled_from(TRIALS), st.sampled_from(SITES), st.sampled_from(list(Role))),
    max_size=12,
)


def _scan_can(actor: Actor, action: str, trial_id: int, site_id: int | None) -> bool:
    """The permission rule read off the grants one by one (what the index must agree with)."""
    roles = ACTION_ROLES[action]
    for g in actor.grants:
        if g.trial_id != trial_id or g.role not in roles:
            continue
        if (g.role == Role.PARTICIPANT and action in PARTICIPANT_CHANNELS
                and actor.via not in PARTICIPANT_CHANNELS[action]):  # fmt: skip
            continue
        if g.site_id is None or site_id is None or g.site_id == site_id:
            return True
    return False


def _scan_sees(actor: Actor, trial_id: int, site_id: int | None) -> bool:
    return any(
        g.trial_id == trial_id and (g.site_id is None or site_id is None or g.site_id == site_id)
        for g in actor.grants
    )


@settings(max_examples=300, deadline=None)
@given(grants, st.sampled_from(VIAS), st.sampled_from(sorted(ACTION_ROLES)),
       st.sampled_from(TRIALS), st.sampled_from(SITES))  # fmt: skip
def test_the_index_answers_as_a_scan_of_every_grant(
    held: list[Grant], via: str, action: str, trial_id: int, site_id: int | None
) -> None:
    actor = Actor(1, "u", "U", tuple(held), via=via)
    allowed_by_scan = _scan_can(actor, action, trial_id, site_id)
    assert access.can(actor, action, trial_id, site_id) is allowed_by_scan
    if allowed_by_scan:
        access.require(actor, action, trial_id, site_id)
    else:
        expected = PermissionDenied if _scan_sees(actor, trial_id, site_id) else NotFound
        with pytest.raises(expected):
            access.require(actor, action, trial_id, site_id)
    in_trial = [g for g in held if g.trial_id == trial_id]
    assert actor.roles_in(trial_id) == {g.role for g in in_trial}
    assert actor.roles_at(trial_id, site_id) == {
        g.role for g in in_trial if g.site_id is None or g.site_id == site_id
    }
    assert actor.primary_role(trial_id) == (sorted(g.role for g in in_trial) or [None])[0]
    allowed = [g for g in in_trial if g.role in ACTION_ROLES[action]]
    if any(g.site_id is None for g in allowed):
        assert access.visible_sites(actor, action, trial_id) is None
    elif allowed:
        assert access.visible_sites(actor, action, trial_id) == {g.site_id for g in allowed}
    else:
        with pytest.raises((NotFound, PermissionDenied)):
            access.visible_sites(actor, action, trial_id)


def test_a_request_s_actor_shares_its_tokens_index_and_more_grants_are_a_new_one() -> None:
    """The actor of each request is the cached token's actor with the request's id
    (`replace`): the same grants, so the same index, built once. More grants (the command line
    taking a role, say) make a new index, never the first actor's."""
    cached = Actor(1, "m", "M", (Grant(1, 10, Role.MONITOR),), auth_ref="token:1")
    assert cached.primary_role(1) == Role.MONITOR  # the index built
    request = replace(cached, request_id="r1", extra={})
    assert request.grants is cached.grants and "by_trial" in vars(request.grants)
    assert request == replace(cached, request_id="r1") and request.grants == cached.grants
    monitor = Actor(1, "m", "M", (Grant(1, 10, Role.MONITOR),))
    assert access.can(monitor, "participant.read", 1, 10)
    assert not access.can(monitor, "participant.read", 1, 11)
    assert monitor.primary_role(1) == Role.MONITOR
    wider = replace(monitor, grants=(*monitor.grants, Grant(1, None, Role.AUDITOR)))
    assert access.can(wider, "participant.read", 1, 11)
    assert wider.primary_role(1) == Role.AUDITOR  # the first of its roles by name
    assert not access.can(monitor, "participant.read", 1, 11)
    assert monitor.roles_in(2) == frozenset() and monitor.primary_role(2) is None


def test_hundreds_of_site_grants_are_one_role_with_its_sites() -> None:
    investigator = Actor(1, "i", "I", tuple(Grant(1, site, Role.INVESTIGATOR)
                                            for site in range(1000, 1551)))  # fmt: skip
    assert investigator.held_in(1) == {Role.INVESTIGATOR: frozenset(range(1000, 1551))}
    assert access.can(investigator, "randomize", 1, 1550)
    assert not access.can(investigator, "randomize", 1, 999)
    assert access.visible_sites(investigator, "participant.read", 1) == frozenset(
        range(1000, 1551)
    )
