"""Checkpoints: the head of every audit chain, signed and written to the anchor store.

When. Every `every_events` events of a chain, every `every_minutes` minutes while events are
being written (per app process), after a commit that locked records, unblinded a participant,
completed an analysis, exported data or rotated keys, and on demand (``dtx audit anchor``).
Checkpoints run after the commit that asked for them, in their own transaction, so the heads
they sign are committed and a failure never undoes the user's change (it is logged).

Before signing, the new checkpoint checks the database against the latest anchor in the store
(each anchored event still there with its hash, every later event keyed and linked): a
checkpoint never signs over a contradiction; it records ``audit.checkpoint_refused`` instead.
After writing the file it records ``audit.checkpoint`` (anchor name and SHA-256 of the file) in
the global chain, so the checkpoint is itself audited and a later anchor covers that event.

`verify_anchors` compares the database with every anchor in a store and reports a rewritten
history, a truncated tail, a deleted head or a deleted trial with the anchors it contradicts.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509 as cx509
from flask import Flask, current_app, has_app_context
from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, scoped_session

from dtx_trials.anchors import (
    Anchor,
    AnchorError,
    AnchorStore,
    ChainHead,
    DirectoryStore,
    FileSigner,
    Signer,
    TimestampAuthority,
    build_anchor,
    read_anchor,
    read_public_key,
    utc_text,
)
from dtx_trials.crypto import UnknownKeyError, split_keys
from dtx_trials.db import transaction
from dtx_trials.models import AuditChainHead, AuditEvent, Trial
from dtx_trials.services import audit
from dtx_trials.services.access import SYSTEM, Actor
from dtx_trials.services.audit import Problem

log = logging.getLogger(__name__)

_PENDING = audit.CHECKPOINT_PENDING
_IS_CHECKPOINT = "dtx_checkpoint_session"


@dataclass
class Anchoring:
    """The instance's anchor configuration (built from app config by `configure`)."""

    store: AnchorStore
    signer: Signer | None
    trusted: dict[str, bytes]
    tsa: TimestampAuthority | None = None
    tsa_cert: cx509.Certificate | None = None
    every_events: int = 1000
    every_minutes: float = 60.0
    last_anchor_at: float = field(default_factory=time.monotonic)
    failures: int = 0


def configure(app: Flask) -> Anchoring | None:
    """Read ANCHOR_* and TSA_* settings; None when no anchor store is configured."""
    c = app.config
    instance = Path(app.instance_path)
    key_path = c.get("ANCHOR_SIGNING_KEY")
    anchor_dir = c.get("ANCHOR_DIR")
    if key_path is None and not c.get("TESTING") and (instance / "anchor-signing.key").exists():
        key_path = str(instance / "anchor-signing.key")
    if anchor_dir is None and key_path and not c.get("TESTING"):
        anchor_dir = str(instance / "anchors")
    if not anchor_dir:
        return None
    signer = FileSigner(key_path) if key_path else None
    trusted = {}
    for text in split_keys(c.get("ANCHOR_PUBLIC_KEYS")):
        raw = read_public_key(text)
        trusted[hashlib.sha256(raw).hexdigest()[:16]] = raw
    if signer is not None:
        trusted[signer.key_id] = signer.public_key()
    tsa_cert = None
    tsa = None
    if c.get("TSA_CERT"):
        tsa_cert = cx509.load_pem_x509_certificate(Path(c["TSA_CERT"]).read_bytes())
        if c.get("TSA_URL"):
            tsa = TimestampAuthority(c["TSA_URL"], Path(c["TSA_CERT"]).read_bytes())
    anchoring = Anchoring(
        store=DirectoryStore(anchor_dir),
        signer=signer,
        trusted=trusted,
        tsa=tsa,
        tsa_cert=tsa_cert,
        every_events=int(c.get("ANCHOR_EVERY_EVENTS") or 1000),
        every_minutes=float(c.get("ANCHOR_EVERY_MINUTES") or 60),
    )
    app.extensions["dtx_anchoring"] = anchoring
    return anchoring


def current_anchoring() -> Anchoring | None:
    if not has_app_context():
        return None
    anchoring: Anchoring | None = current_app.extensions.get("dtx_anchoring")
    return anchoring


# ---------------------------------------------------------------- writing


class CheckpointRefusedError(AnchorError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(
            f"checkpoint refused: the database contradicts the latest anchor "
            f"({len(problems)} problem(s); first: {problems[0].message})"
        )
        self.problems = problems


def _committed_heads(session: Session) -> dict[str, ChainHead]:
    codes = dict(session.execute(select(Trial.id, Trial.code)).all())
    heads = {}
    for head in session.scalars(select(AuditChainHead)):
        trial_id = int(head.chain.split(":")[1]) if head.chain.startswith("trial:") else None
        heads[head.chain] = ChainHead(head.seq, head.hash, codes.get(trial_id))
    return heads


def latest_anchor(anchoring: Anchoring) -> Anchor | None:
    """The newest anchor of the store that can be trusted (None if there is none)."""
    for name in reversed(anchoring.store.names()):
        try:
            return read_anchor(
                name, anchoring.store.get(name), anchoring.trusted, anchoring.tsa_cert
            )
        except AnchorError as exc:
            log.error("untrusted anchor skipped: %s", exc)
    return None


def _since_anchor_problems(
    session: Session, anchor: Anchor, heads: dict[str, ChainHead]
) -> list[Problem]:
    """Check the database against the latest anchor: what it signed is still there, and every
    event after it is keyed, linked and verifies (the events a new checkpoint will cover)."""
    problems = _contradictions(session, [anchor])
    for chain, anchored in anchor.chains.items():
        head = heads.get(chain)
        if head is None or head.seq <= anchored.seq:
            continue
        events = list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.chain == chain, AuditEvent.seq > anchored.seq)
                .order_by(AuditEvent.seq)
            )
        )
        prev, expected = anchored.hash, anchored.seq + 1
        for event in events:
            where = f"audit_event id={event.id} ({chain} seq {event.seq})"
            try:
                ok = event.key_id is not None and (
                    audit.event_hash(audit.hashed_fields(event)) == event.hash
                )
            except UnknownKeyError:
                ok = False
            if event.seq != expected or event.prev_hash != prev or not ok:
                problems.append(Problem("anchor", where, f"{where}: does not extend the anchor"))
                break
            prev, expected = event.hash, event.seq + 1
        else:
            if expected - 1 != head.seq or prev != head.hash:
                problems.append(
                    Problem("anchor", f"{chain} head", f"{chain}: head does not match its events")
                )
    return problems


def write_checkpoint(
    session: Session,
    reason: str,
    *,
    actor: Actor = SYSTEM,
    anchoring: Anchoring | None = None,
) -> Anchor:
    """Sign the committed chain heads into a new anchor, then audit the checkpoint."""
    anchoring = anchoring or current_anchoring()
    if anchoring is None:
        raise AnchorError("no anchor store configured (set DTX_ANCHOR_DIR)")
    if anchoring.signer is None:
        raise AnchorError("no anchor signing key configured (set DTX_ANCHOR_SIGNING_KEY)")
    session.info[_IS_CHECKPOINT] = True
    try:
        with transaction(session):
            heads = _committed_heads(session)
            previous = latest_anchor(anchoring)
            problems = _since_anchor_problems(session, previous, heads) if previous else []
        if problems:
            with transaction(session):
                audit.record_event(
                    session,
                    actor,
                    "audit.checkpoint_refused",
                    entity_type="anchor",
                    entity_id=None,
                    trial_id=None,
                    details={
                        "reason": reason,
                        "latest_anchor": previous.name if previous else None,
                        "n_problems": len(problems),
                    },
                )
            raise CheckpointRefusedError(problems)
        name, data = build_anchor(heads, reason=reason, signer=anchoring.signer, tsa=anchoring.tsa)
        anchoring.store.put(name, data)
        anchor = read_anchor(name, data, anchoring.trusted, anchoring.tsa_cert)
        with transaction(session):
            audit.record_event(
                session,
                actor,
                "audit.checkpoint",
                entity_type="anchor",
                entity_id=None,
                trial_id=None,
                details={
                    "anchor": name,
                    "sha256": anchor.sha256,
                    "reason": reason,
                    "n_chains": len(heads),
                    "signer": anchor.key_id,
                    "time_stamped": anchor.timestamp is not None,
                },
            )
        anchoring.last_anchor_at = time.monotonic()
        return anchor
    finally:
        session.info.pop(_IS_CHECKPOINT, None)


def request(session: Session, reason: str) -> None:
    """Ask for a checkpoint after the current transaction commits (at once if none is open)."""
    real = session() if isinstance(session, scoped_session) else session
    if real.in_transaction():
        real.info.setdefault(_PENDING, set()).add(reason)
        return
    _run_checkpoint(real, reason)


def _run_checkpoint(session: Session, reason: str) -> None:
    anchoring = current_anchoring()
    if anchoring is None or anchoring.signer is None:
        return
    checkpoint_session = Session(bind=session.get_bind())
    try:
        write_checkpoint(checkpoint_session, reason, anchoring=anchoring)
    except (AnchorError, OSError, SQLAlchemyError) as exc:
        anchoring.failures += 1
        log.error("audit checkpoint (%s) failed: %s", reason, exc)
    finally:
        checkpoint_session.close()


@sa_event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    appended: dict[str, list[int]] = session.info.pop(audit.APPENDED, {})
    pending: set[str] = session.info.pop(_PENDING, set())
    if session.info.get(_IS_CHECKPOINT):
        return
    anchoring = current_anchoring()
    if anchoring is None or anchoring.signer is None or not (appended or pending):
        return
    n = max(anchoring.every_events, 1)
    crossed = any((first - 1) // n != last // n for first, last in appended.values())
    waited = time.monotonic() - anchoring.last_anchor_at >= anchoring.every_minutes * 60
    if crossed or (appended and waited):
        pending.add("periodic")
    if pending:
        _run_checkpoint(session, ",".join(sorted(pending)))


@sa_event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(audit.APPENDED, None)
    session.info.pop(_PENDING, None)


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class AnchorReport:
    n_anchors: int
    n_trusted: int
    problems: tuple[Problem, ...]


def load_anchors(
    store: AnchorStore, trusted: dict[str, bytes], tsa_cert: cx509.Certificate | None
) -> tuple[list[Anchor], list[Problem]]:
    anchors, problems = [], []
    for name in store.names():
        try:
            anchors.append(read_anchor(name, store.get(name), trusted, tsa_cert))
        except AnchorError as exc:
            problems.append(Problem("anchor", name, f"anchor {exc}"))
    anchors.sort(key=lambda a: (a.created_at, a.name))
    return anchors, problems


def _contradictions(session: Session, anchors: Iterable[Anchor]) -> list[Problem]:
    """Compare the database with each anchor; one problem per chain and kind of contradiction,
    naming the first and the last anchor it contradicts."""
    anchors = list(anchors)
    chains = {chain for a in anchors for chain in a.chains}
    if not chains:
        return []
    heads = {h.chain: h for h in session.scalars(select(AuditChainHead))}
    max_seq = dict(
        session.execute(
            select(AuditEvent.chain, func.max(AuditEvent.seq))
            .where(AuditEvent.chain.in_(chains))
            .group_by(AuditEvent.chain)
        ).all()
    )
    wanted = {(chain, h.seq) for a in anchors for chain, h in a.chains.items()}
    at_seq: dict[tuple[str, int], str] = {}
    for chain in chains:
        seqs = sorted({seq for c, seq in wanted if c == chain})
        for start in range(0, len(seqs), 500):
            for seq, digest in session.execute(
                select(AuditEvent.seq, AuditEvent.hash).where(
                    AuditEvent.chain == chain, AuditEvent.seq.in_(seqs[start : start + 500])
                )
            ):
                at_seq[(chain, seq)] = digest
    found: dict[tuple[str, str], list[tuple[Anchor, str]]] = defaultdict(list)
    for anchor in anchors:
        for chain, anchored in anchor.chains.items():
            if anchored.seq == 0:
                continue
            label = chain + (f" ({anchored.trial_code})" if anchored.trial_code else "")
            have = at_seq.get((chain, anchored.seq))
            if chain not in max_seq and chain not in heads:
                kind = "deleted_chain"
                detail = (
                    f"{label}: the whole chain is gone"
                    + (" (trial deleted)" if anchored.trial_code else "")
                    + f"; the anchor recorded seq {anchored.seq}"
                )
            elif have is None and max_seq.get(chain, 0) < anchored.seq:
                kind = "truncated"
                detail = (
                    f"{label}: the trail ends at seq {max_seq.get(chain, 0)} but the anchor "
                    f"recorded seq {anchored.seq} (tail deleted)"
                )
            elif have is None:
                kind = "rewritten"
                detail = f"{label}: seq {anchored.seq} is missing (history rewritten)"
            elif have != anchored.hash:
                kind = "rewritten"
                detail = (
                    f"{label}: seq {anchored.seq} has hash {have[:12]}… but the anchor "
                    f"recorded {anchored.hash[:12]}… (history rewritten)"
                )
            else:
                continue
            found[(chain, kind)].append((anchor, detail))
        for chain, anchored in anchor.chains.items():
            head = heads.get(chain)
            if anchored.seq and head is None and chain in max_seq:
                found[(chain, "deleted_head")].append(
                    (anchor, f"{chain}: the chain head row is gone (deleted)")
                )
            elif head is not None and head.seq < anchored.seq and chain in max_seq:
                found[(chain, "head_behind")].append(
                    (
                        anchor,
                        f"{chain}: the chain head says seq {head.seq}, the anchor recorded "
                        f"seq {anchored.seq} (head rolled back)",
                    )
                )
    problems = []
    for (chain, kind), hits in sorted(found.items()):
        hits.sort(key=lambda hit: (hit[0].created_at, hit[0].name))
        first, last = hits[0][0], hits[-1][0]
        # the first anchor's detail says what was lost earliest; the last one proves the most
        span = (
            f"contradicts anchor {first.name} ({utc_text(first.created_at)})"
            if len(hits) == 1
            else f"contradicts {len(hits)} anchors: first {first.name} "
            f"({utc_text(first.created_at)}), last {last.name} ({utc_text(last.created_at)})"
        )
        problems.append(Problem("anchor", f"{chain} {kind}", f"{hits[-1][1]}; {span}"))
    return problems


def verify_anchors(
    session: Session,
    store: AnchorStore,
    trusted: dict[str, bytes],
    tsa_cert: cx509.Certificate | None = None,
) -> AnchorReport:
    """Compare the database with every anchor of the store (see the module docstring)."""
    anchors, problems = load_anchors(store, trusted, tsa_cert)
    problems.extend(_contradictions(session, anchors))
    by_name = {a.name: a for a in anchors}
    names = set(store.names())
    for event in session.scalars(
        select(AuditEvent).where(AuditEvent.action == "audit.checkpoint").order_by(AuditEvent.seq)
    ):
        details = {c["field"]: c.get("new") for c in event.changes}
        name = str(details.get("anchor"))
        where = f"audit_event id={event.id} ({event.chain} seq {event.seq})"
        if name not in names:
            problems.append(
                Problem("anchor", name, f"{where}: anchor {name} is missing from the store")
            )
        elif name in by_name and by_name[name].sha256 != details.get("sha256"):
            problems.append(
                Problem("anchor", name, f"{where}: anchor {name} differs from the one it wrote")
            )
    if not anchors and not problems:
        problems.append(Problem("anchor", str(store), f"no anchors found in {store}"))
    return AnchorReport(len(names), len(anchors), tuple(problems))


def anchor_store_status(anchoring: Anchoring | None) -> dict[str, Any]:
    if anchoring is None:
        return {"anchors": "not configured"}
    return {
        "anchors": str(anchoring.store),
        "anchor_failures": anchoring.failures,
        "signer": anchoring.signer.key_id if anchoring.signer else None,
    }
