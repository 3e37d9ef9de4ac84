"""AUD-05 coverage: every column of every regulated table, edited directly in the database, is
named by `dtx audit verify` (field by field, through a digest, a seal, or a device batch's
Merkle root); the few columns left out are listed with the reason (`__unaudited__`)."""

from __future__ import annotations

import datetime
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    Date,
    Float,
    Integer,
    LargeBinary,
    String,
    Text,
    literal,
    select,
    type_coerce,
)

from dtx_trials.crypto import EncryptedText
from dtx_trials.db import Base, UTCDateTime
from dtx_trials.extensions import db
from tests.dtx_trials.trust_helpers import problems_after, regulated_trial

# Tables outside the regulated record, and why.
NOT_REGULATED = {
    "api_token": "authentication state; events name tokens and verify checks them",
    "web_session": "authentication state; events name sessions and verify checks them",
    "app_token": "authentication state of the DTx app; events name app tokens and verify "
    "checks them",
    "service_credential": "authentication state (client credentials); creation and revocation "
    "are audit events",
    "key_check": "checked against the key at start-up; altering it stops the app",
    "idempotent_request": "a retry's stored answer (encrypted); the change it answers for is "
    "audited in its own rows",
}
# The trail itself: every column but the surrogate id is hashed (tested below).
TRAIL = {"audit_event", "audit_chain_head"}


def _changed(value: Any, column: Any) -> Any:
    """A different value of the column's type (never equal to `value`)."""
    kind = column.type
    if isinstance(kind, EncryptedText | LargeBinary):
        if value is None:
            return b"\x02" + b"k00000000" + bytes(30)
        blob = bytearray(bytes(value))
        blob[-1] ^= 0x01
        return bytes(blob)
    if isinstance(kind, UTCDateTime):
        base = value or datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        return base + datetime.timedelta(seconds=1)
    if isinstance(kind, Date):
        return (value or datetime.date(2026, 1, 1)) + datetime.timedelta(days=1)
    if isinstance(kind, Boolean):
        return not value
    if isinstance(kind, Integer):
        return (value or 0) + 100_000
    if isinstance(kind, Float):
        return (value or 0.0) + 0.5
    if isinstance(kind, JSON):
        return {"tampered": True} if not isinstance(value, list) else [*value, "tampered"]
    if isinstance(kind, String | Text):
        if not value:
            return "X"
        return value[:-1] + ("A" if value[-1] != "A" else "B")
    raise AssertionError(f"no mutation for {column}")


def _edit(table: Any, column: Any, row_id: Any, key: str = "id") -> Any:
    def tamper(conn: Connection) -> None:
        col = table.c[column.name]
        encrypted = isinstance(column.type, EncryptedText)
        raw = type_coerce(col, LargeBinary) if encrypted else col
        stored = conn.execute(select(raw).where(table.c[key] == row_id)).one()[0]
        new = _changed(stored, column)
        value = literal(new, LargeBinary) if encrypted else new
        conn.execute(table.update().where(table.c[key] == row_id).values({column.name: value}))

    return tamper


def test_aud_05_every_column_of_every_regulated_table_is_covered(
    app: Flask, client: FlaskClient
) -> None:
    regulated_trial(client)
    db.session.remove()
    assert problems_after(lambda conn: None) == []
    checked: list[str] = []
    missed: list[str] = []
    for table in Base.metadata.sorted_tables:
        if table.name in NOT_REGULATED:
            continue
        model = next(m.class_ for m in Base.registry.mappers if m.local_table is table)
        exempt = dict(getattr(model, "__unaudited__", {}))
        key = "chain" if table.name == "audit_chain_head" else "id"
        with db.engine.connect() as conn:
            row = conn.execute(select(table.c[key]).order_by(table.c[key].desc())).first()
        assert row is not None, f"the regulated trial has no {table.name} row"
        for column in table.columns:
            if column.name in exempt or (table.name == "audit_event" and column.name == "id"):
                continue
            problems = problems_after(_edit(table, column, row[0], key))
            label = f"{table.name}.{column.name}"
            checked.append(label)
            if table.name in TRAIL:
                named = bool(problems)  # the chain (or its head) no longer verifies
            elif table.name == "device_observation":
                named = any(f"id={row[0]}" in p.message or "batch" in p.message for p in problems)
            else:
                named = any(
                    p.where
                    in (f"{table.name} id={row[0]}.{column.name}", f"{table.name} id={row[0]}")
                    or (column.name == "id" and f"{table.name} id=" in p.where)
                    or (table.name == "protocol_version" and p.kind == "protocol")
                    for p in problems
                )
            if not named:
                missed.append(f"{label}: {[p.message for p in problems][:3]}")
    assert not missed, "\n".join(missed)
    assert len(checked) > 150  # every column of 17 tables
