"""Database round trips of the hot paths, counted with SQLAlchemy's ``before_cursor_execute``
event: deterministic, unlike timings (bench/ measures the speed). Transaction control (BEGIN,
COMMIT) is not counted: psycopg sends BEGIN with the first statement, and SQLite's ``BEGIN
IMMEDIATE`` never leaves the process."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import (
    Allocation,
    ApiToken,
    AuditEvent,
    Membership,
    RandomizationSiteCount,
    RandomizationState,
    RandomizationStratum,
)
from dtx_trials.models.participants import IDENTIFIER_COLUMNS
from dtx_trials.services import accounts, audit
from tests.dtx_trials.trial_flow import (
    MCI_SCREENING,
    api,
    consented_mci_participant,
    enrolled_mci_participant,
    load_trial,
)
from tests.helpers import CLI, counted

# every request counted here but a token's first finds its token in the cache
pytestmark = pytest.mark.usefixtures("cached_tokens")

ADAS = {f"adas_q{i + 1:02d}": 1 for i in range(13)}

def _audit_writes(statements: list[str]) -> tuple[int, int, int]:
    """(head locks, head updates, audit_event inserts) among statements (on PostgreSQL, with
    the head this process last wrote as the guess, the three are one statement)."""
    head_reads = sum(
        1
        for s in statements
        if s.startswith("SELECT audit_chain_head")  # SQLite: BEGIN IMMEDIATE locked it all
        or ("audit_chain_head" in s and "FOR UPDATE" in s)
    )
    head_updates = sum(1 for s in statements if "UPDATE audit_chain_head" in s)
    inserts = sum(1 for s in statements if "INSERT INTO audit_event" in s)
    return head_reads, head_updates, inserts


def _audit_statements(statements: list[str]) -> int:
    return sum(1 for s in statements if "audit_chain_head" in s or "audit_event" in s)


def test_ecrf_submit_takes_at_most_8_round_trips(client: FlaskClient, backend: str) -> None:
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    path = f"/participants/{subject}/visits/{{}}/forms/adas_cog"
    accounts.token_cache().clear()  # the first request of a token reads it from the database
    with counted() as cold:
        saved = api(client, staff["inv"], "PUT", path.format("baseline"),
                    {"values": ADAS, "submit": True}, 200)  # fmt: skip
    with counted() as warm:
        api(client, staff["inv"], "PUT", path.format("week_4"),
            {"values": ADAS, "submit": True}, 200)  # fmt: skip
    # PostgreSQL: the audit write is one statement (the chain head guessed, see audit.py)
    assert len(cold) == (6 if backend == "postgresql" else 8), cold
    assert len(warm) == (5 if backend == "postgresql" else 7), warm  # actor from the cache
    assert not any("api_token" in s for s in warm), warm
    for statements in (cold, warm):
        # the participant is read once (locked), the protocol row (tens of KB) not at all
        assert sum(1 for s in statements if "FROM participant" in s) == 1, statements
        assert not any(s.startswith("SELECT protocol_version") for s in statements), statements
        assert _audit_writes(statements) == (1, 1, 1), statements
        assert _audit_statements(statements) == (1 if backend == "postgresql" else 3), statements
        # the participant's identifiers (encrypted) are neither read nor decrypted
        read = [f"participant.{c}" for c in IDENTIFIER_COLUMNS]
        assert not any(c in s for s in statements for c in read), statements
    # the response was built from the request's own state (no re-select after the write)
    assert saved["record"]["visit_code"] == "baseline"
    assert saved["record"]["status"] == "submitted"
    assert saved["record"]["data"]["adas_total"] == 13
    assert audit.verify(db.session).ok


def test_events_of_one_transaction_are_one_head_update_and_one_insert(
    client: FlaskClient,
) -> None:
    """A submit that also opens its visit appends two events: one head read, one head update
    and one multi-row insert, and the chain verifies."""
    staff = load_trial(client)
    subject = consented_mci_participant(client, staff)
    chain = audit.chain_for(staff.trial.id)
    before = db.session.scalar(
        select(AuditEvent.seq).where(AuditEvent.chain == chain).order_by(AuditEvent.seq.desc())
    )
    db.session.rollback()
    with counted() as statements:
        path = f"/participants/{subject}/visits/screening/forms/screening"
        api(client, staff["inv"], "PUT", path, {"values": MCI_SCREENING, "submit": True}, 200)
    assert _audit_writes(statements) == (1, 1, 1), statements
    events = db.session.scalars(
        select(AuditEvent)
        .where(AuditEvent.chain == chain, AuditEvent.seq > (before or 0))
        .order_by(AuditEvent.seq)
    ).all()
    assert [e.action for e in events] == ["visit.open", "form.submit"]
    assert events[1].prev_hash == events[0].hash
    assert audit.verify(db.session).ok


def test_a_revoked_token_is_refused_at_once(client: FlaskClient) -> None:
    staff = load_trial(client)
    inv = staff["inv"]
    assert client.get("/api/v1/me", headers=inv.headers).status_code == 200  # now cached
    token_id = client.get("/api/v1/auth/tokens", headers=inv.headers).get_json()[0]["id"]
    assert client.delete(f"/api/v1/auth/tokens/{token_id}", headers=inv.headers).status_code == 204
    assert client.get("/api/v1/me", headers=inv.headers).status_code == 401


def test_a_token_revoked_by_another_session_is_refused_at_once(client: FlaskClient) -> None:
    """A revocation committed by any session of the process (the CLI, a job) empties the
    cache, not only one made through the API."""
    staff = load_trial(client)
    inv = staff["inv"]
    assert client.get("/api/v1/me", headers=inv.headers).status_code == 200
    token = db.session.scalars(select(ApiToken).where(ApiToken.user_id == inv.user.id)).one()
    accounts.revoke_token(db.session, CLI, token.id)
    assert client.get("/api/v1/me", headers=inv.headers).status_code == 401


def test_a_removed_role_is_refused_at_once(client: FlaskClient) -> None:
    staff = load_trial(client)
    inv = staff["inv"]
    assert api(client, inv, "GET", "/participants") == []
    membership = db.session.scalars(
        select(Membership).where(Membership.user_id == inv.user.id)
    ).one()
    accounts.revoke_role(
        db.session, CLI, trial_id=staff.trial.id, membership_id=membership.id
    )
    response = client.get(
        "/api/v1/trials/MCI-COGTRAIN-01/participants", headers=inv.headers
    )
    assert response.status_code in (403, 404)


def test_an_uncached_token_still_resolves_in_one_query(client: FlaskClient) -> None:
    staff = load_trial(client)
    accounts.token_cache().clear()
    with counted() as statements:
        me = client.get("/api/v1/me", headers=staff["inv"].headers)
    assert me.status_code == 200
    assert me.get_json()["username"] == "inv"
    assert len([s for s in statements if "api_token" in s]) == 1, statements
    assert len(statements) == 1, statements


def test_randomization_takes_the_trial_lock_last_and_briefly(
    client: FlaskClient, backend: str
) -> None:
    """The randomization state row (the trial's lock) is locked after every read and the
    participant's own writes: from it to commit, only the allocation, the counters and the
    audit write; the visits are planned by one multi-row insert; the caps read counters. The
    request id is looked up by the read after the participant's lock (no statement of its
    own), and so are a retry and another participant's use of it."""
    staff = load_trial(client)
    first = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{first}/randomization", {}, 201)
    subject = enrolled_mci_participant(client, staff)
    # no head remembered from this process's last commit (as when another worker wrote the
    # chain last): the head is locked with the counters, the write still one statement
    audit._last_heads.clear()
    path = f"/participants/{subject}/randomization"
    with counted() as statements:
        made = api(client, staff["inv"], "POST", path, {"request_id": "rq-1"}, 201)
    with counted() as retry:
        again = api(client, staff["inv"], "POST", path, {"request_id": "rq-1"}, 200)
    assert again["randomization_number"] == made["randomization_number"]
    # the trial, the participant locked, the read after it, the allocation itself
    assert len(retry) == 4 and not any("FOR UPDATE" in s for s in retry[2:]), retry
    other = enrolled_mci_participant(client, staff)
    with counted() as refused:
        body = api(client, staff["inv"], "POST", f"/participants/{other}/randomization",
                   {"request_id": "rq-1"}, 409)  # fmt: skip
    assert "request id was used for another participant" in body["message"], body
    assert len(refused) == 3, refused
    # SQLite cannot match RETURNING rows of a multi-row insert to its parameters: one INSERT
    # per planned visit there (statements that never leave the process)
    visit_inserts = sum(1 for s in statements if s.startswith("INSERT INTO visit"))
    assert visit_inserts == (1 if backend == "postgresql" else 4), statements
    assert len(statements) - visit_inserts == (6 if backend == "postgresql" else 13), statements
    lock = next(i for i, s in enumerate(statements) if s.startswith("SELECT randomization_state"))
    under_lock = statements[lock + 1 :]
    if backend == "postgresql":
        # the counters, the chain's head and the stratum's row (both participants are in the
        # same stratum) locked by one statement; the state row's UPDATE, the stratum row's and
        # the allocation's INSERT ride on the audit write, one statement (the head this process
        # wrote last is the guess: see services/audit.py)
        assert "audit_chain_head" in statements[lock] and "FOR UPDATE" in statements[lock]
        assert "JOIN randomization_stratum" in statements[lock], statements[lock]
        assert "JOIN randomization_site_count" in statements[lock], statements[lock]
        assert under_lock[0].startswith("WITH advance AS (UPDATE randomization_state "), under_lock
        assert "INSERT INTO randomization_stratum " in under_lock[0], under_lock
        assert "INSERT INTO randomization_site_count " in under_lock[0], under_lock
        assert "INSERT INTO allocation " in under_lock[0], under_lock
        assert "audit_chain_head" in under_lock[0], under_lock
        assert len(under_lock) == 1, under_lock
    else:
        assert under_lock[0].startswith("SELECT randomization_stratum.id"), under_lock
        assert under_lock[1].startswith("INSERT INTO allocation "), under_lock
        assert under_lock[2].startswith("UPDATE randomization_state "), under_lock
        assert under_lock[3].startswith("INSERT INTO randomization_site_count "), under_lock
        assert under_lock[4].startswith("UPDATE randomization_stratum "), under_lock
        assert len(under_lock) == 5 + 3, under_lock  # + the audit write
    assert not any("count(" in s for s in statements), statements
    # the participant's identifiers (encrypted) are neither read nor decrypted
    read = [f"participant.{c}" for c in IDENTIFIER_COLUMNS]
    assert not any(c in s for s in statements for c in read), statements
    state = db.session.scalars(select(RandomizationState)).one()
    assert state.active_allocations == 2
    sites = db.session.scalars(select(RandomizationSiteCount.active_allocations)).all()
    assert sites == [2], sites  # one site (the stratum's)
    assert audit.verify(db.session).ok


def test_a_strata_first_allocation_reads_its_row_after_the_lock(
    client: FlaskClient, backend: str
) -> None:
    """PostgreSQL: a stratum without a row yet (the one-statement lock of counters, head and
    stratum row finds nothing) locks the counters and the head, then reads the stratum's row
    by a statement of its own and draws the new row's id; the write is still one statement."""
    staff = load_trial(client)
    first = enrolled_mci_participant(client, staff, raw_moca=20)
    api(client, staff["inv"], "POST", f"/participants/{first}/randomization", {}, 201)
    subject = enrolled_mci_participant(client, staff, raw_moca=24)  # another MoCA band
    with counted() as statements:
        api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    lock = next(i for i, s in enumerate(statements) if s.startswith("SELECT randomization_state"))
    after = statements[lock:]
    if backend == "postgresql":
        assert "JOIN randomization_stratum" in after[0] and "FOR UPDATE" in after[0], after
        assert "randomization_stratum" not in after[1] and "FOR UPDATE" in after[1], after
        assert after[2].startswith("SELECT randomization_stratum.id"), after
        assert "nextval" in after[3], after
        assert after[4].startswith("WITH advance AS (UPDATE randomization_state "), after
        assert len(after) == 5, after
        assert len(statements) == 7 + 3, statements  # the usual 7, and these three
    strata = db.session.scalars(select(RandomizationStratum.stratum_key)).all()
    allocated = db.session.scalars(select(Allocation.stratum_key)).all()
    assert len(strata) == 2 and sorted(strata) == sorted(allocated)
    assert audit.verify(db.session).ok


def _list_statements(client: FlaskClient, who: Any) -> list[str]:
    with counted() as statements:
        page = client.get(
            "/api/v1/trials/MCI-COGTRAIN-01/participants?per_page=50", headers=who.headers
        )
    assert page.status_code == 200
    return statements


def test_participant_list_statements_do_not_grow_with_participants(client: FlaskClient) -> None:
    staff = load_trial(client)
    inv = staff["inv"]
    for _ in range(2):
        consented_mci_participant(client, staff)
    enrolled_mci_participant(client, staff)
    few = _list_statements(client, inv)
    for _ in range(4):
        consented_mci_participant(client, staff)
    enrolled_mci_participant(client, staff)
    many = _list_statements(client, inv)
    listed = client.get(
        "/api/v1/trials/MCI-COGTRAIN-01/participants?per_page=50", headers=inv.headers
    ).get_json()
    assert len(listed) == 8
    assert all(p["missing_consents"] == [] for p in listed)
    assert len(many) == len(few), (few, many)
    assert len(many) <= 6, many
