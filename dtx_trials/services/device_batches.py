"""Device observations are immutable and covered by ingest batch, not field by field.

Each ingest gives its rows one batch id; its audit event (``device.ingest``) records the batch
id, the row ids stored (as ranges) and the Merkle root of the stored rows (leaf = SHA-256 of
the row's canonical JSON, id included). `verify_batches` recomputes every root: a changed,
inserted, deleted or moved reading changes it. To say which column changed, each row also
carries short keyed tags of its columns (``seal``: ``t1:<key id>:`` + 4 hex digits per column),
written at ingest: after a root mismatch, the column whose tag no longer matches is named.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dtx_trials.crypto import UnknownKeyError, cipher
from dtx_trials.models import AuditEvent, DeviceObservation
from dtx_trials.services.audit import Problem, canonical_json, to_jsonable

COLUMNS = (
    "trial_id",
    "participant_id",
    "stream",
    "observed_at",
    "value",
    "unit",
    "source",
    "received_at",
    "batch_id",
)
_TAG_HEX = 4


@functools.lru_cache(maxsize=65536)
def _tag(kid: str, column: str, value: Any) -> str:
    text = canonical_json(to_jsonable(value))
    return cipher().key(kid).short_tag(text, f"device_observation.{column}")


def column_tags(row: Mapping[str, Any]) -> str:
    """The keyed per-column tags stored in ``seal`` (under the current field key)."""
    kid = cipher().current.kid
    return f"t1:{kid}:" + "".join(_tag(kid, c, row[c]) for c in COLUMNS)


def _changed_columns(row: Mapping[str, Any], seal: str | None) -> list[str] | None:
    """Columns whose tag no longer matches (None: no usable seal)."""
    parts = (seal or "").split(":")
    if len(parts) != 3 or parts[0] != "t1" or len(parts[2]) != _TAG_HEX * len(COLUMNS):
        return None
    cipher().key(parts[1])  # UnknownKeyError if the key is not in the ring
    return [
        c
        for n, c in enumerate(COLUMNS)
        if _tag(parts[1], c, row[c]) != parts[2][n * _TAG_HEX : (n + 1) * _TAG_HEX]
    ]


def leaf(row: Mapping[str, Any]) -> bytes:
    values = [row["id"], *(to_jsonable(row[c]) for c in COLUMNS), row["seal"]]
    return hashlib.sha256(canonical_json(values).encode()).digest()


def merkle_root(leaves: Sequence[bytes]) -> str:
    """Binary Merkle tree over leaves in id order (an odd node is carried up unchanged)."""
    if not leaves:
        return hashlib.sha256(b"").hexdigest()
    level = list(leaves)
    while len(level) > 1:
        nxt = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


@dataclass(frozen=True)
class SeriesSeal:
    """What the seal and the leaf of every row of one series (participant, stream, unit,
    source) in one batch share, formatted once."""

    seal_head: str  # "t1:<kid>:" and the tags of trial_id, participant_id, stream
    seal_tail: str  # the tags of unit, source, received_at, batch_id
    leaf_head: str  # the leaf's JSON from trial_id to the opening quote of observed_at
    leaf_tail: str  # the leaf's JSON from unit to the opening quote of seal


class BatchSealer:
    """The seals (`column_tags`) and Merkle leaves (`leaf`) of one ingest batch's rows, equal to
    theirs character for character (tests/dtx_trials/test_devices.py compares them), with what
    repeats across rows formatted once: only observed_at and value change from row to row."""

    def __init__(self, trial_id: int, received_at: datetime.datetime, batch_id: str) -> None:
        key = cipher().current
        self._kid = key.kid
        self._trial_id = trial_id
        self._received_at = to_jsonable(received_at)
        self._batch_id = batch_id
        self._taggers = {c: key.short_tagger(f"device_observation.{c}") for c in COLUMNS}
        self._tag_observed_at = self._taggers["observed_at"]
        self._value_tags: dict[str, str] = {}
        self._series: dict[tuple[int, str, str, str], SeriesSeal] = {}

    def _tag(self, column: str, value: Any) -> str:
        return self._taggers[column](canonical_json(to_jsonable(value)))

    def series(self, participant_id: int, stream: str, unit: str, source: str) -> SeriesSeal:
        key = (participant_id, stream, unit, source)
        found = self._series.get(key)
        if found is None:
            values = {"trial_id": self._trial_id, "participant_id": participant_id,
                      "stream": stream, "unit": unit, "source": source,
                      "received_at": self._received_at, "batch_id": self._batch_id}
            tags = {c: self._tag(c, v) for c, v in values.items()}
            text = {c: canonical_json(v) for c, v in values.items()}
            found = self._series[key] = SeriesSeal(
                seal_head=f"t1:{self._kid}:" + tags["trial_id"] + tags["participant_id"]
                + tags["stream"],
                seal_tail=tags["unit"] + tags["source"] + tags["received_at"]
                + tags["batch_id"],
                leaf_head=f",{text['trial_id']},{text['participant_id']},{text['stream']},\"",
                leaf_tail=f",{text['unit']},{text['source']},{text['received_at']},"
                f"{text['batch_id']},\"",
            )  # fmt: skip
        return found

    def seal_and_leaf(
        self, row_id: int, series: SeriesSeal, observed_at: str, value: str
    ) -> tuple[str, bytes]:
        """The seal and the leaf of a row; ``observed_at`` is its naive UTC time in ISO form
        with microseconds (no "Z"), ``value`` the JSON (repr) of its float value."""
        value_tag = self._value_tags.get(value)
        if value_tag is None:
            value_tag = self._value_tags[value] = self._taggers["value"](value)
        seal = (
            series.seal_head
            + self._tag_observed_at(f'"{observed_at}Z"')
            + value_tag
            + series.seal_tail
        )
        text = f'[{row_id}{series.leaf_head}{observed_at}Z",{value}{series.leaf_tail}{seal}"]'
        return seal, hashlib.sha256(text.encode()).digest()


def details(batch_id: str, ids: Sequence[int], leaves: Sequence[bytes]) -> dict[str, Any]:
    """``batch_details`` from the stored rows' ids and leaves, in id order."""
    return {"batch": batch_id, "ids": id_ranges(ids), "merkle_root": merkle_root(leaves)}


def id_ranges(ids: Iterable[int]) -> str:
    """``"1-1000,1005,1007-1010"`` for a set of ids."""
    out: list[str] = []
    ordered = sorted(ids)
    start = prev = None
    for i in ordered:
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            out.append(f"{start}-{prev}" if start != prev else str(start))
        start = prev = i
    if start is not None:
        out.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(out)


def parse_ranges(text: str) -> set[int]:
    ids: set[int] = set()
    for part in filter(None, (text or "").split(",")):
        low, _, high = part.partition("-")
        ids.update(range(int(low), int(high or low) + 1))
    return ids


def _rows(session: Session, where: Any) -> list[dict[str, Any]]:
    table = DeviceObservation.__table__
    cols = [table.c.id, *(table.c[c] for c in COLUMNS), table.c.seal]  # type: ignore[attr-defined]
    return [dict(r._mapping) for r in session.execute(select(*cols).where(where))]


def batch_details(
    session: Session, batch_id: str, stored: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """What the ingest event records about the rows a batch stored (``stored``: those rows with
    their ids as the insert returned them; else they are read back)."""
    if stored is None:
        stored = _rows(session, DeviceObservation.batch_id == batch_id)
    rows = sorted(stored, key=lambda r: r["id"])
    return {
        "batch": batch_id,
        "ids": id_ranges(r["id"] for r in rows),
        "merkle_root": merkle_root([leaf(r) for r in rows]),
    }


def verify_batches(session: Session, trial_id: int | None) -> tuple[int, list[Problem]]:
    """Recompute every batch root; return (rows checked, problems)."""
    stmt = select(AuditEvent).where(AuditEvent.action == "device.ingest")
    where: Any = DeviceObservation.id.is_not(None)
    if trial_id is not None:
        stmt = stmt.where(AuditEvent.trial_id == trial_id)
        where = DeviceObservation.trial_id == trial_id
    recorded: dict[str, tuple[AuditEvent, dict[str, Any]]] = {}
    for event in session.scalars(stmt):
        details = {c["field"]: c.get("new") for c in event.changes}
        if details.get("batch"):
            recorded[str(details["batch"])] = (event, details)
    by_batch: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    rows = _rows(session, where)
    for row in rows:
        by_batch[row["batch_id"]].append(row)
    problems: list[Problem] = []
    for batch_id, batch_rows in sorted(by_batch.items(), key=lambda kv: str(kv[0])):
        batch_rows.sort(key=lambda r: r["id"])
        if batch_id is None or batch_id not in recorded:
            ids = id_ranges(r["id"] for r in batch_rows)
            problems.append(
                Problem(
                    "device",
                    f"device_observation ids {ids}",
                    f"device_observation id(s) {ids}: "
                    + (
                        "belong to no ingest batch"
                        if batch_id is None
                        else f"name batch {batch_id}, which no device.ingest event recorded"
                    )
                    + " (inserted behind the app)",
                )
            )
            continue
        event, details = recorded[batch_id]
        where_event = f"device.ingest audit_event id={event.id}"
        want_ids = parse_ranges(str(details.get("ids") or ""))
        have_ids = {r["id"] for r in batch_rows}
        for label, ids in (
            ("inserted into", have_ids - want_ids),
            ("deleted from", want_ids - have_ids),
        ):
            if ids:
                problems.append(
                    Problem(
                        "device",
                        f"device batch {batch_id}",
                        f"device_observation id(s) {id_ranges(ids)}: {label} batch {batch_id} "
                        f"behind the app ({where_event})",
                    )
                )
        if merkle_root([leaf(r) for r in batch_rows]) == details.get("merkle_root"):
            continue
        named = False
        for row in batch_rows:
            try:
                changed = _changed_columns(row, row["seal"])
            except UnknownKeyError as exc:
                problems.append(Problem("key", f"device_observation id={row['id']}", str(exc)))
                continue
            if changed is None:
                changed = ["seal"]
            for column in changed:
                named = True
                problems.append(
                    Problem(
                        "device",
                        f"device_observation id={row['id']}.{column}",
                        f"device_observation id={row['id']}: {column} changed behind the app "
                        f"(batch {batch_id} no longer has the Merkle root of {where_event})",
                    )
                )
        if not named and not want_ids ^ have_ids:
            problems.append(
                Problem(
                    "device",
                    f"device batch {batch_id}",
                    f"device batch {batch_id}: rows differ from the Merkle root of {where_event}",
                )
            )
    for batch_id, (event, details) in sorted(recorded.items()):
        if batch_id not in by_batch and details.get("ids"):
            problems.append(
                Problem(
                    "device",
                    f"device batch {batch_id}",
                    f"device batch {batch_id} ({details['ids']}): rows recorded by audit_event "
                    f"id={event.id} are missing (deleted behind the app)",
                )
            )
    return len(rows), problems
