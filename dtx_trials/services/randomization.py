"""Randomization service: concurrency-safe allocation, blinding, voiding, emergency unblinding.

`randomize_participant` is one transaction: lock the trial's randomization state row
(``SELECT ... FOR UPDATE``; the whole database on SQLite), then the participant; check status,
idempotency and caps; derive the stratum from screening data; allocate with the pure design
(`randomization.allocate`, a function of the locked state, the trial secret and the sequence
number); insert the allocation with ``seq_no = next_seq``; advance the counter; move the
participant to `randomized`; append the audit events; commit. The counter lives in the locked
row (no database sequence), so numbers are gap-free: a rollback returns nothing to anyone.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dtx_trials.db import transaction, utcnow
from dtx_trials.models import Allocation, Participant, RandomizationState, Site, Trial
from dtx_trials.services import accounts, audit
from dtx_trials.services.access import Actor, require
from dtx_trials.services.errors import Conflict, NotFound, ValidationError
from dtx_trials.services.participants import (
    clinical_values,
    get_participant,
    plan_participant_visits,
    protocol_for,
)
from dtx_trials.services.protocols import active_protocol
from ecrf.expressions import ExpressionError, evaluate, truthy
from protocols.model import Protocol
from randomization.designs import Design, allocate, build_design, future_slots, replay, void
from randomization.errors import RandomizationError
from randomization.lists import parse_allocation_list
from randomization.state import AllocationResult, ReplayInput
from randomization.state import RandomizationState as DesignState
from randomization.strata import SITE_FACTOR, UNSTRATIFIED, stratum_key

_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I


def design_for(protocol: Protocol, list_table: Mapping[str, Any] | None = None) -> Design:
    """Build the pure design the protocol's randomization section describes."""
    spec = protocol.randomization
    params: dict[str, object] = {}
    if spec.method == "permuted_block":
        params = {"block_sizes": list(spec.block_sizes)}
    elif spec.method == "minimization":
        factors: list[dict[str, object]] = [
            {"name": f.id, "weight": f.weight, "levels": list(f.level_codes)} for f in spec.factors
        ]
        if spec.stratify_by_site:
            factors.append({"name": SITE_FACTOR, "weight": spec.site_weight})
        params = {"factors": factors, "imbalance": spec.imbalance, "burn_in": spec.burn_in}
        if spec.p is not None:
            params["p"] = spec.p
    elif spec.method == "efron" and spec.efron_p is not None:
        params = {"p": spec.efron_p}
    elif spec.method == "big_stick":
        params = {"b": spec.bsd_b}
    elif spec.method == "block_urn":
        params = {"lambda": spec.bud_lambda}
    elif spec.method == "list":
        if not list_table:
            raise Conflict("no allocation list has been uploaded for this trial")
        params = {"table": dict(list_table)}
    return build_design(
        spec.method, [a.code for a in protocol.arms], [a.ratio for a in protocol.arms], params
    )


def derive_stratum(
    protocol: Protocol, values: Mapping[str, object], site_code: str
) -> tuple[str, dict[str, str]]:
    """Return (stratum key, factor levels as used) from screening values; 422 when missing."""
    spec = protocol.randomization
    levels: list[tuple[str, str]] = []
    for factor in spec.factors:
        value = values.get(factor.field)
        if value is None or value == "" or isinstance(value, dict):
            raise ValidationError(
                f"cannot randomize: stratification factor {factor.id} missing",
                {"factors": {factor.id: [f"field {factor.field} has no submitted value"]}},
            )
        level = None
        for candidate in factor.levels:
            try:
                matched = candidate.is_otherwise or truthy(evaluate(candidate.when or "", values))
            except ExpressionError as exc:
                raise ValidationError(f"cannot derive {factor.id}: {exc}") from exc
            if matched:
                level = candidate.code
                break
        if level is None:
            raise ValidationError(
                f"cannot randomize: no level of {factor.id} matches",
                {"factors": {factor.id: [f"value {value!r} fits no level"]}},
            )
        levels.append((factor.id, level))
    factors = dict(levels)
    if spec.stratify_by_site:
        factors[SITE_FACTOR] = site_code
    if spec.method == "minimization":
        return UNSTRATIFIED, factors
    return stratum_key(site_code if spec.stratify_by_site else None, levels), factors


def _design_state(row: RandomizationState) -> DesignState:
    """The pure design state stored in the locked row (empty before the first allocation)."""
    return DesignState.from_json(row.state) if row.state else DesignState()


def _lock_state(session: Session, trial: Trial) -> RandomizationState:
    state = session.scalars(
        select(RandomizationState)
        .where(RandomizationState.trial_id == trial.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if state is None:
        raise Conflict(f"trial {trial.code} has no active randomization model")
    return state


def _activation_code(prefix: str | None) -> str:
    body = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))
    return f"{prefix + '-' if prefix else ''}{body[:4]}-{body[4:]}"


def randomize_participant(
    session: Session, actor: Actor, trial: Trial, subject_code: str, request_id: str | None = None
) -> tuple[Allocation, bool]:
    """Allocate an enrolled participant; return (allocation, created).

    A retry with the same request id returns the original allocation (created=False); any
    other attempt on a randomized participant is a 409 naming the existing allocation.
    """
    participant = get_participant(session, actor, trial, subject_code, "randomize")
    require(actor, "randomize", trial.id, participant.site_id)
    with transaction(session):
        state_row = _lock_state(session, trial)  # lock order: randomization state, participant
        participant = get_participant(session, actor, trial, subject_code, "randomize", lock=True)
        if request_id:
            previous = session.scalars(
                select(Allocation).where(
                    Allocation.trial_id == trial.id, Allocation.request_id == request_id
                )
            ).first()
            if previous is not None:
                if previous.participant_id != participant.id:
                    raise Conflict("this request id was used for another participant")
                return previous, False
        existing = session.scalars(
            select(Allocation).where(
                Allocation.trial_id == trial.id, Allocation.participant_id == participant.id
            )
        ).first()
        if existing is not None:
            raise Conflict(
                "participant is already randomized",
                randomization_number=existing.randomization_number,
            )
        if participant.status != "enrolled":
            raise Conflict(
                f"participant is {participant.status}; only enrolled participants are randomized",
                status=participant.status,
            )
        protocol = protocol_for(session, participant)
        site = session.get(Site, participant.site_id)
        assert site is not None
        values, _ = clinical_values(session, participant)
        key, factors = derive_stratum(protocol, values, site.code)
        _check_caps(session, trial, protocol, site, key)
        try:
            design = design_for(protocol, state_row.list_table)
            result, next_state = allocate(
                design,
                _design_state(state_row),
                secret=bytes.fromhex(state_row.secret),
                model=trial.code,
                seq_no=state_row.next_seq,
                stratum_key=key,
                factors=factors,
            )
        except RandomizationError as exc:
            raise Conflict(f"cannot randomize: {exc}") from exc
        now = utcnow()
        allocation = Allocation(
            trial_id=trial.id,
            participant_id=participant.id,
            protocol_version_id=participant.protocol_version_id
            or active_protocol(session, trial)[0].id,
            seq_no=result.seq_no,
            stratum_key=key,
            factors=dict(factors),
            method=result.method,
            arm_code=result.arm,
            randomization_number=f"R{result.seq_no:05d}",
            activation_code=_activation_code(protocol.blinding.activation_code_prefix),
            evidence=_jsonable(result.evidence),
            request_id=request_id,
            allocated_at=now,
            allocated_by_id=actor.user_id,
        )
        session.add(allocation)
        state_row.state = next_state.to_json()
        state_row.next_seq = result.seq_no + 1
        state_row.updated_at = now
        audit.record_create(
            session, actor, "randomization.allocate", allocation, site_id=participant.site_id
        )
        before = audit.snapshot(participant)
        participant.status = "randomized"
        participant.randomized_at = now
        audit.record_update(session, actor, "participant.randomized", participant, before)
        plan_participant_visits(session, actor, participant, protocol)
    return allocation, True


def _jsonable(evidence: Mapping[str, object]) -> dict[str, Any]:
    return dict(audit.to_jsonable(dict(evidence)))


def _check_caps(session: Session, trial: Trial, protocol: Protocol, site: Site, key: str) -> None:
    caps = protocol.randomization.caps
    active = (
        select(func.count())
        .select_from(Allocation)
        .where(Allocation.trial_id == trial.id, Allocation.status == "allocated")
    )
    checks = [
        (caps.trial, active, f"trial {trial.code}"),
        (
            caps.per_site,
            active.join(Participant, Participant.id == Allocation.participant_id).where(
                Participant.site_id == site.id
            ),
            f"site {site.code}",
        ),
        (caps.per_stratum, active.where(Allocation.stratum_key == key), "this stratum"),
    ]
    for cap, stmt, what in checks:
        if cap is not None and (session.scalar(stmt) or 0) >= cap:
            raise Conflict(f"randomization cap of {cap} reached for {what}")


def get_allocation(session: Session, actor: Actor, trial: Trial, subject_code: str) -> Allocation:
    participant = get_participant(session, actor, trial, subject_code, "participant.read")
    allocation = session.scalars(
        select(Allocation).where(
            Allocation.trial_id == trial.id, Allocation.participant_id == participant.id
        )
    ).first()
    if allocation is None:
        raise NotFound("participant is not randomized")
    return allocation


@dataclass(frozen=True)
class Unblinding:
    allocation: Allocation
    arm_code: str
    arm_name: str
    at: Any
    signed_by: str


def emergency_unblind(
    session: Session,
    actor: Actor,
    trial: Trial,
    subject_code: str,
    *,
    password: str,
    reason: str,
    category: str,
    recipient: str | None = None,
) -> Unblinding:
    """Break the blind for one participant: re-authenticated, reasoned, signed and audited.

    Sponsor and monitors see the event (who, when, why), never the arm.
    """
    if not reason.strip():
        raise ValidationError("a reason is required", {"reason": ["must not be blank"]})
    participant = get_participant(session, actor, trial, subject_code, "unblind.emergency")
    user = accounts.reauthenticate(session, actor, password, purpose="unblinding")
    with transaction(session):
        participant = get_participant(
            session, actor, trial, subject_code, "unblind.emergency", lock=True
        )
        allocation = session.scalars(
            select(Allocation).where(
                Allocation.trial_id == trial.id, Allocation.participant_id == participant.id
            )
        ).first()
        if allocation is None:
            raise Conflict("participant is not randomized; there is nothing to unblind")
        protocol = protocol_for(session, participant)
        now = utcnow()
        audit.record_event(
            session,
            actor,
            "randomization.emergency_unblinding",
            entity_type="participant",
            entity_id=participant.id,
            trial_id=trial.id,
            site_id=participant.site_id,
            reason=reason.strip(),
            details={
                "category": category,
                "recipient": recipient or user.printed_name,
                "signed_by": user.printed_name,
                "signature_meaning": "emergency unblinding",
                "randomization_number": allocation.randomization_number,
            },
        )
        before = audit.snapshot(participant)
        participant.is_emergency_unblinded = True
        audit.record_update(
            session, actor, "participant.unblinded", participant, before, reason=reason.strip()
        )
        arm = protocol.arm(allocation.arm_code)
    return Unblinding(allocation, arm.code, arm.name.en, now, user.printed_name)


def void_allocation(
    session: Session, actor: Actor, trial: Trial, subject_code: str, *, password: str, reason: str
) -> Allocation:
    """Mark an allocation "randomized in error": its slot is retired, never reused."""
    if not reason.strip():
        raise ValidationError("a reason is required", {"reason": ["must not be blank"]})
    require(actor, "trial.manage", trial.id)
    accounts.reauthenticate(session, actor, password, purpose="void_allocation")
    with transaction(session):
        state_row = _lock_state(session, trial)
        participant = get_participant(session, actor, trial, subject_code, "participant.read")
        allocation = session.scalars(
            select(Allocation)
            .where(Allocation.trial_id == trial.id, Allocation.participant_id == participant.id)
            .with_for_update()
        ).first()
        if allocation is None or allocation.status != "allocated":
            raise Conflict("no active allocation to void")
        protocol = protocol_for(session, participant)
        design = design_for(protocol, state_row.list_table)
        result = AllocationResult(
            arm=allocation.arm_code,
            stratum_key=allocation.stratum_key,
            factors=allocation.factors,
            method=allocation.method,
            seq_no=allocation.seq_no,
            evidence=allocation.evidence,
        )
        state_row.state = void(design, _design_state(state_row), result).to_json()
        before = audit.snapshot(allocation)
        allocation.status = "voided"
        allocation.void_reason = reason.strip()
        allocation.evidence = {**allocation.evidence, "voided_before_seq": state_row.next_seq}
        audit.record_update(
            session,
            actor,
            "randomization.void",
            allocation,
            before,
            site_id=participant.site_id,
            reason=reason.strip(),
        )
    return allocation


def list_allocations(session: Session, actor: Actor, trial: Trial) -> list[Allocation]:
    """The allocation list, with arms (unblinded roles only)."""
    require(actor, "allocation.read", trial.id)
    with transaction(session):
        audit.record_event(
            session,
            actor,
            "allocation_list.viewed",
            entity_type="trial",
            entity_id=trial.id,
            trial_id=trial.id,
        )
    return list(
        session.scalars(
            select(Allocation).where(Allocation.trial_id == trial.id).order_by(Allocation.seq_no)
        )
    )


def next_slots(session: Session, actor: Actor, trial: Trial, key: str, n: int) -> list[str]:
    """The next n arms of a stratum, without consuming them (unblinded roles only)."""
    require(actor, "allocation.read", trial.id)
    state_row = session.scalars(
        select(RandomizationState).where(RandomizationState.trial_id == trial.id)
    ).first()
    if state_row is None:
        raise Conflict("trial has no randomization model")
    _, protocol = active_protocol(session, trial)
    try:
        slots = future_slots(
            design_for(protocol, state_row.list_table),
            _design_state(state_row),
            bytes.fromhex(state_row.secret),
            trial.code,
            key,
            n,
        )
    except RandomizationError as exc:
        raise ValidationError(str(exc), {"stratum": [str(exc)]}) from exc
    with transaction(session):
        audit.record_event(
            session,
            actor,
            "allocation_list.future_viewed",
            entity_type="trial",
            entity_id=trial.id,
            trial_id=trial.id,
            details={"stratum": key, "n": n},
        )
    return slots


def upload_allocation_list(session: Session, actor: Actor, trial: Trial, csv_text: str) -> int:
    """Store an uploaded allocation table (method `list`) before the first allocation."""
    require(actor, "allocation.upload", trial.id)
    try:
        table = parse_allocation_list(csv_text)
    except RandomizationError as exc:
        raise ValidationError("allocation list rejected", {"list": [str(exc)]}) from exc
    with transaction(session):
        state_row = _lock_state(session, trial)
        if state_row.next_seq != 1:
            raise Conflict("allocations exist; the list can no longer be replaced")
        _, protocol = active_protocol(session, trial)
        try:
            design_for(protocol, table)
        except RandomizationError as exc:
            raise ValidationError("allocation list rejected", {"list": [str(exc)]}) from exc
        state_row.list_table = {k: list(v) for k, v in table.items()}
        audit.record_event(
            session,
            actor,
            "allocation_list.uploaded",
            entity_type="trial",
            entity_id=trial.id,
            trial_id=trial.id,
            details={"strata": len(table), "slots": sum(len(v) for v in table.values())},
        )
    return sum(len(v) for v in table.values())


def replay_problems(session: Session, trial: Trial) -> list[str]:
    """Recompute every allocation from the secret and stored inputs; name any that differ."""
    state_row = session.scalars(
        select(RandomizationState).where(RandomizationState.trial_id == trial.id)
    ).first()
    allocations = list(
        session.scalars(
            select(Allocation).where(Allocation.trial_id == trial.id).order_by(Allocation.seq_no)
        )
    )
    if state_row is None or not allocations:
        return []
    _, protocol = active_protocol(session, trial)
    inputs = [
        ReplayInput(
            seq_no=a.seq_no,
            stratum_key=a.stratum_key,
            factors=a.factors,
            voided_before_seq=a.evidence.get("voided_before_seq"),
        )
        for a in allocations
    ]
    try:
        results = replay(
            design_for(protocol, state_row.list_table),
            bytes.fromhex(state_row.secret),
            trial.code,
            inputs,
        )
    except RandomizationError as exc:
        return [f"allocation replay failed: {exc}"]
    problems = []
    expected_seq = 1
    for allocation, result in zip(allocations, results, strict=True):
        if allocation.seq_no != expected_seq:
            problems.append(
                f"allocation seq {expected_seq} missing (gap before {allocation.seq_no})"
            )
        expected_seq = allocation.seq_no + 1
        if result.arm != allocation.arm_code:
            problems.append(
                f"allocation id={allocation.id} (seq {allocation.seq_no}): stored arm "
                "differs from the replayed allocation"
            )
    return problems


def candidate_designs(protocol: Protocol) -> list[tuple[str, Design, list[str]]]:
    """The protocol's own design and the usual alternatives on the same arms and factors.

    Returns (label, design, stratify_by) triples; minimization balances its factors itself,
    so it runs unstratified.
    """
    spec = protocol.randomization
    arms = [a.code for a in protocol.arms]
    ratio = [a.ratio for a in protocol.arms]
    strata = [f.id for f in spec.factors] + ([SITE_FACTOR] if spec.stratify_by_site else [])
    total = sum(protocol.reduced_ratio)
    own_strata = [] if spec.method == "minimization" else strata
    designs = [
        (
            f"protocol: {spec.method}",
            design_for(protocol)
            if spec.method != "list"
            else build_design("simple", arms, ratio, {}),
            own_strata,
        )
    ]
    factors: list[dict[str, object]] = [
        {"name": f.id, "weight": f.weight, "levels": list(f.level_codes)} for f in spec.factors
    ]
    if spec.stratify_by_site:
        factors.append({"name": SITE_FACTOR, "weight": spec.site_weight})
    alternatives: list[tuple[str, str, dict[str, object], list[str]]] = [
        ("simple", "simple", {}, []),
        (
            f"stratified blocks {2 * total}/{4 * total}",
            "permuted_block",
            {"block_sizes": [2 * total, 4 * total]},
            strata,
        ),
    ]
    if factors:
        alternatives.append(
            ("minimization p=0.8", "minimization", {"factors": factors, "p": 0.8}, [])
        )
    for label, method, params, stratify in alternatives:
        if method == spec.method and (
            method != "permuted_block" or list(spec.block_sizes) == params["block_sizes"]
        ):
            continue
        designs.append((label, build_design(method, arms, ratio, params), stratify))
    return designs


@dataclass(frozen=True)
class DesignComparison:
    label: str
    result: Any  # randomization.simulate.SimulationResult


def compare_designs(
    session: Session, actor: Actor, trial: Trial, *, n: int, runs: int, seed: int = 20261123
) -> list[DesignComparison]:
    """Simulate the active protocol's design and its alternatives (sponsor admins)."""
    from randomization.simulate import simulate

    require(actor, "protocol.manage", trial.id)
    if not (2 <= n <= 2000 and 1 <= runs <= 500):
        raise ValidationError(
            "simulation too large or too small", {"n": ["2 to 2,000"], "runs": ["1 to 500"]}
        )
    _, protocol = active_protocol(session, trial)
    factor_levels = {f.id: list(f.level_codes) for f in protocol.randomization.factors}
    sites = [s.code for s in protocol.sites.initial_sites] or ["S1", "S2", "S3", "S4"]
    return [
        DesignComparison(
            label,
            simulate(
                design,
                n,
                runs,
                factor_levels=factor_levels,
                site_levels=sites,
                stratify_by=stratify_by,
                seed=seed,
            ),
        )
        for label, design, stratify_by in candidate_designs(protocol)
    ]
