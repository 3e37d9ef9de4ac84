"""The audit trail against its database administrator (issue 15, AUD-05, on PostgreSQL).

Each attack of the issue is played as a DBA would play it (the append-only trigger disabled
where a DBA could, on where an application database user acts), inside a transaction that is
rolled back after `verify` (with the anchors) has looked at it. Every attack must be reported;
the chain attacks must name the first anchor they contradict. Figures: attacks tried/detected.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, select, text

from dtx_trials import create_app
from dtx_trials.anchors import Anchor, DirectoryStore
from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent
from dtx_trials.services import audit, checkpoints, keys
from dtx_trials.services.audit import Problem
from tests.dtx_trials.trust_helpers import anchoring, problems_after, regulated_trial
from tests.reliability.conftest import Figures

Attack = Callable[[Connection], None]


def _events(conn: Connection, chain: str) -> list[dict[str, object]]:
    rows = conn.execute(
        select(AuditEvent.__table__).where(AuditEvent.chain == chain).order_by(AuditEvent.seq)
    )
    return [dict(r._mapping) for r in rows]


def _plain_hash(row: dict[str, object]) -> str:
    """The product's hash function as the DBA can run it: SHA-256 of the canonical JSON (the
    key of the keyed hash is not in the database)."""
    fields = {name: audit.to_jsonable(row[name]) for name in audit.HASHED_FIELDS}
    return hashlib.sha256(audit.canonical_json(fields).encode()).hexdigest()


def _rehash_from(conn: Connection, chain: str, start_seq: int) -> None:
    """Recompute prev_hash/hash of every event from `start_seq` on, and the head."""
    rows = _events(conn, chain)
    prev = audit.GENESIS
    table = AuditEvent.__table__
    for row in rows:
        if int(row["seq"]) >= start_seq:  # type: ignore[call-overload]
            row["prev_hash"] = prev
            row["hash"] = _plain_hash(row)
            conn.execute(
                table.update()
                .where(table.c.id == row["id"])
                .values(prev_hash=row["prev_hash"], hash=row["hash"])
            )
        prev = str(row["hash"])
    last = rows[-1]
    conn.execute(
        text("UPDATE audit_chain_head SET seq = :s, hash = :h WHERE chain = :c"),
        {"s": last["seq"], "h": last["hash"], "c": chain},
    )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_dba_attacks_are_detected_with_the_anchor_they_contradict(
    app: Flask, client: FlaskClient, tmp_path: Path, figures: Figures
) -> None:
    with anchoring(app, tmp_path / "anchors", ANCHOR_EVERY_EVENTS=100_000) as configured:
        regulated = regulated_trial(client)  # the unblinding and the analysis wrote anchors
        trial_id = regulated.staff.trial.id
        db.session.remove()
        checkpoints.write_checkpoint(db.session, "test")
        store = DirectoryStore(tmp_path / "anchors")
        trusted = dict(configured.trusted)
        anchors, unreadable = checkpoints.load_anchors(store, trusted, None)
    assert not unreadable and len(anchors) >= 2
    chain = audit.chain_for(trial_id)
    db.session.remove()
    assert problems_after(lambda conn: None, store=store, trusted=trusted) == []
    with db.engine.connect() as conn:
        events = _events(conn, chain)
    by_action = {str(e["action"]): e for e in events}
    mid = events[len(events) // 3]

    def first_anchor_over(seq: int, on: str = chain) -> Anchor:
        return next(a for a in anchors if on in a.chains and a.chains[on].seq >= seq)

    def edit_and_rehash(conn: Connection) -> None:
        conn.execute(
            text("UPDATE audit_event SET reason = 'edited' WHERE id = :i"), {"i": mid["id"]}
        )
        _rehash_from(conn, chain, int(mid["seq"]))  # type: ignore[call-overload]

    def delete_and_rehash(conn: Connection) -> None:
        conn.execute(text("DELETE FROM audit_event WHERE id = :i"), {"i": mid["id"]})
        # renumber through negative values so that (chain, seq) stays unique row by row
        conn.execute(
            text("UPDATE audit_event SET seq = -(seq - 1) WHERE chain = :c AND seq > :s"),
            {"c": chain, "s": mid["seq"]},
        )
        conn.execute(
            text("UPDATE audit_event SET seq = -seq WHERE chain = :c AND seq < 0"), {"c": chain}
        )
        _rehash_from(conn, chain, int(mid["seq"]))  # type: ignore[call-overload]

    def reorder_and_rehash(conn: Connection) -> None:
        a, b = events[int(mid["seq"]) - 1], events[int(mid["seq"])]  # type: ignore[call-overload]
        conn.execute(
            text("UPDATE audit_event SET seq = -seq WHERE id IN (:a, :b)"),
            {"a": a["id"], "b": b["id"]},
        )
        conn.execute(
            text("UPDATE audit_event SET seq = :s WHERE id = :i"), {"s": b["seq"], "i": a["id"]}
        )
        conn.execute(
            text("UPDATE audit_event SET seq = :s WHERE id = :i"), {"s": a["seq"], "i": b["id"]}
        )
        _rehash_from(conn, chain, int(a["seq"]))  # type: ignore[call-overload]

    def backdate_and_rehash(conn: Connection) -> None:
        conn.execute(
            text("UPDATE audit_event SET at = at - interval '30 days' WHERE id = :i"),
            {"i": mid["id"]},
        )
        _rehash_from(conn, chain, int(mid["seq"]))  # type: ignore[call-overload]

    signed = by_action["form.signed"] if "form.signed" in by_action else by_action["form.sign"]

    def forged_update_as_other_investigator(conn: Connection) -> None:
        # an application database user (trigger on): change a value, append a form.update
        # event as another investigator, hashed with the product's hash function
        conn.execute(
            text("UPDATE form_record SET data = CAST(:d AS JSON) WHERE id = :i"),
            {"d": '{"moca_raw": 30}', "i": regulated.record_id},
        )
        last = _events(conn, chain)[-1]
        forged = {
            **signed,
            "seq": int(last["seq"]) + 1,  # type: ignore[call-overload]
            "op": "update",
            "action": "form.update",
            "at": datetime.datetime.now(datetime.UTC),
            "entity_type": "form_record",
            "entity_id": regulated.record_id,
            "changes": [{"field": "data", "old": None, "new": {"moca_raw": 30}}],
            "prev_hash": last["hash"],
        }
        forged.pop("id")
        forged["hash"] = _plain_hash(forged)
        conn.execute(AuditEvent.__table__.insert().values(**forged))
        conn.execute(
            text("UPDATE audit_chain_head SET seq = :s, hash = :h WHERE chain = :c"),
            {"s": forged["seq"], "h": forged["hash"], "c": chain},
        )

    def insert_without_session_holding_the_key(conn: Connection) -> None:
        # even with the field key, an event not made through an app session is reported
        last = _events(conn, chain)[-1]
        forged = {**signed, "seq": int(last["seq"]) + 1, "prev_hash": last["hash"]}  # type: ignore[call-overload]
        forged.pop("id")
        forged["auth_ref"] = None
        forged["hash"] = audit.event_hash(
            {k: audit.to_jsonable(forged[k]) for k in audit.HASHED_FIELDS}
        )
        conn.execute(AuditEvent.__table__.insert().values(**forged))
        conn.execute(
            text("UPDATE audit_chain_head SET seq = :s, hash = :h WHERE chain = :c"),
            {"s": forged["seq"], "h": forged["hash"], "c": chain},
        )

    def truncate_tail_and_head(conn: Connection) -> None:
        cut = int(events[-1]["seq"]) - 5  # type: ignore[call-overload]
        conn.execute(
            text("DELETE FROM audit_event WHERE chain = :c AND seq > :s"), {"c": chain, "s": cut}
        )
        conn.execute(text("DELETE FROM audit_chain_head WHERE chain = :c"), {"c": chain})

    unblinding = next(e for e in events if e["action"] == "participant.unblinded")

    def erase_unblinding(conn: Connection) -> None:
        cut = int(unblinding["seq"]) - 1  # type: ignore[call-overload]
        conn.execute(
            text("DELETE FROM audit_event WHERE chain = :c AND seq > :s"), {"c": chain, "s": cut}
        )
        conn.execute(
            text("UPDATE participant SET is_emergency_unblinded = false WHERE id = :i"),
            {"i": unblinding["entity_id"]},
        )
        prev = _events(conn, chain)[-1]
        conn.execute(
            text("UPDATE audit_chain_head SET seq = :s, hash = :h WHERE chain = :c"),
            {"s": prev["seq"], "h": prev["hash"], "c": chain},
        )

    def delete_head(conn: Connection) -> None:
        conn.execute(text("DELETE FROM audit_chain_head WHERE chain = :c"), {"c": chain})

    def delete_trial(conn: Connection) -> None:
        conn.execute(text("UPDATE trial SET active_protocol_version_id = NULL"))
        for table in reversed(db.metadata.sorted_tables):
            if "trial_id" in table.c:
                conn.execute(table.delete().where(table.c.trial_id == trial_id))
        for name, where in (
            ("signature", "form_record_id NOT IN (SELECT id FROM form_record)"),
            ("data_query", "form_record_id NOT IN (SELECT id FROM form_record)"),
        ):
            conn.execute(text(f"DELETE FROM {name} WHERE {where}"))
        conn.execute(text("DELETE FROM audit_event WHERE chain = :c"), {"c": chain})
        conn.execute(text("DELETE FROM audit_chain_head WHERE chain = :c"), {"c": chain})
        conn.execute(text("DELETE FROM trial WHERE id = :t"), {"t": trial_id})

    def column(sql: str, **params: object) -> Attack:
        return lambda conn: conn.execute(text(sql), params) and None

    ids = {
        name: db.session.scalar(text(f'SELECT max(id) FROM "{name}"'))
        for name in (
            "signature",
            "device_observation",
            "protocol_version",
            "randomization_state",
            "randomization_stratum",
            "allocation",
            "form_record",
            "consent",
            "data_query",
            "analysis_run",
            "visit",
            "user",
        )
    }
    db.session.remove()
    # (name, attack, trigger on, what the report must name)
    chain_first = first_anchor_over(int(mid["seq"]))  # type: ignore[call-overload]
    attacks: list[tuple[str, Attack, bool, str]] = [
        ("edit an event and recompute the chain", edit_and_rehash, False, chain_first.name),
        ("delete an event and recompute the chain", delete_and_rehash, False, chain_first.name),
        ("reorder two events and recompute", reorder_and_rehash, False, chain_first.name),
        ("backdate an event and recompute", backdate_and_rehash, False, chain_first.name),
        (
            "app DB user: change a value, append form.update as another investigator",
            forged_update_as_other_investigator,
            True,
            "written without the key",
        ),
        (
            "with the field key: INSERT an event without an app session",
            insert_without_session_holding_the_key,
            False,
            "without an app session",
        ),
        (
            "delete the last events and the head",
            truncate_tail_and_head,
            False,
            first_anchor_over(int(events[-1]["seq"]) - 4).name,  # type: ignore[call-overload]
        ),
        (
            "erase an emergency unblinding (tail)",
            erase_unblinding,
            False,
            first_anchor_over(int(unblinding["seq"])).name,  # type: ignore[call-overload]
        ),
        ("delete the chain head", delete_head, False, "chain head row"),
        ("delete a whole trial", delete_trial, False, first_anchor_over(1).name),
    ]
    coverage = [
        (
            "signature printed name",
            "UPDATE signature SET printed_name = 'Someone Else' WHERE id = :i",
            "signature",
            "printed_name",
        ),
        (
            "signature time",
            "UPDATE signature SET signed_at = signed_at - interval '1 day' WHERE id = :i",
            "signature",
            "signed_at",
        ),
        (
            "a device reading",
            "UPDATE device_observation SET value = value + 5 WHERE id = :i",
            "device_observation",
            "value",
        ),
        (
            "protocol content",
            'UPDATE protocol_version SET content = CAST(\'{"code": "X"}\' AS JSON) WHERE id = :i',
            "protocol_version",
            "content",
        ),
        (
            "randomization state",
            "UPDATE randomization_state SET state = CAST('{}' AS JSON) WHERE id = :i",
            "randomization_state",
            "state",
        ),
        (
            "a stratum's design state (its block position, to steer the next allocation)",
            "UPDATE randomization_stratum SET state = CAST(json_build_object("
            "'n_slots', 0, 'counts', json_build_array(0, 0), 'block', json_build_array(0, 0, 0),"
            "'marginals', json_build_object()) AS JSON) WHERE id = :i",
            "randomization_stratum",
            "state",
        ),
        (
            "allocation factors",
            "UPDATE allocation SET factors = CAST('{}' AS JSON) WHERE id = :i",
            "allocation",
            "factors",
        ),
        (
            "activation code",
            "UPDATE allocation SET activation_code = 'FORGED' WHERE id = :i",
            "allocation",
            "activation_code",
        ),
        (
            "activation time",
            "UPDATE allocation SET allocated_at = allocated_at - interval '1 hour' WHERE id = :i",
            "allocation",
            "allocated_at",
        ),
        (
            "form submitted_at",
            "UPDATE form_record SET submitted_at = submitted_at - interval '1 day' WHERE id = :i",
            "form_record",
            "submitted_at",
        ),
        (
            "consent document",
            "UPDATE consent SET document_id = 'other_icf' WHERE id = :i",
            "consent",
            "document_id",
        ),
        (
            "query authorship",
            "UPDATE data_query SET raised_by_id = NULL WHERE id = :i",
            "data_query",
            "raised_by_id",
        ),
        (
            "analysis results",
            "UPDATE analysis_run SET results = CAST('{\"effect\": 1}' AS JSON) WHERE id = :i",
            "analysis_run",
            "results",
        ),
        (
            "visit window",
            "UPDATE visit SET window_start_on = window_start_on - 3 WHERE id = :i",
            "visit",
            "window_start_on",
        ),
        (
            "a password hash",
            "UPDATE \"user\" SET password_hash = 'planted' WHERE id = :i",
            "user",
            "password_hash",
        ),
        (
            "delete a device reading",
            "DELETE FROM device_observation WHERE id = :i",
            "device_observation",
            "deleted",
        ),
    ]
    for name, sql, table, col in coverage:
        named = f"id(s) {ids[table]}" if col == "deleted" else f"{table} id={ids[table]}: {col}"
        attacks.append((name, column(sql, i=ids[table]), False, named))
    detected = 0
    missed = []
    for name, attack, trigger_on, must_name in attacks:
        problems: list[Problem] = problems_after(
            attack, trigger_on=trigger_on, store=store, trusted=trusted
        )
        text_out = "\n".join(p.message for p in problems)
        if problems and must_name in text_out:
            detected += 1
        else:
            missed.append(f"{name}: expected {must_name!r} in {text_out[:400]!r}")
    # a wrong field key is refused at start-up, before anything is written under it
    wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktISE="
    with pytest.raises(keys.KeyMismatchError, match="wrong key"):
        create_app(
            {
                "TESTING": True,
                "SQLALCHEMY_DATABASE_URI": str(db.engine.url.render_as_string(hide_password=False)),
                "FIELD_KEY": wrong,
            }
        )
    detected += 1
    tried = len(attacks) + 1
    figures.add("anchors written", len(anchors))
    figures.add("attacks tried", tried)
    figures.add("attacks detected", detected)
    assert not missed, "\n".join(missed)
