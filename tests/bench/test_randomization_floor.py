"""The randomization's floor (`bench.bare_app.floor_randomize`) sends the statements of a
randomization through the API, and its rows are valid rows of the trial: one gap-free
allocation sequence with the API's, allocations that replay, a trail that verifies; behind
the API's own stack (`bench.bare_app.create_api_floor_app`) it answers as the API does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, func, select

from bench.bare_app import create_api_floor_app, create_bare_app
from dtx_trials.extensions import db
from dtx_trials.models import Allocation, Participant, Trial, Visit
from dtx_trials.services import audit, randomization
from tests.conftest import app_config
from tests.dtx_trials.trial_flow import MCI_CODE, api, enrolled_mci_participant, load_trial

_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


@contextmanager
def counted(engine: Any) -> Iterator[list[str]]:
    """The statements sent on the engine inside the block (transaction control left out)."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith(_CONTROL):
            statements.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.usefixtures("cached_tokens")  # the counted request's token is the cache's
def test_floor_sends_the_randomization_statements_and_writes_valid_rows(
    client: FlaskClient,
) -> None:
    staff = load_trial(client)
    inv = staff["inv"]
    path = "/participants/{}/randomization"
    # the trial's first allocation is the real endpoint's (the floor leaves it to it)
    api(client, inv, "POST", path.format(enrolled_mci_participant(client, staff)), {}, 201)
    subjects = [enrolled_mci_participant(client, staff) for _ in range(4)]
    bare = create_bare_app(db.engine.url.render_as_string(hide_password=False))
    engine = bare.extensions["bare_engine"]
    floor_client = bare.test_client()
    floor_path = f"/trials/{MCI_CODE}/participants/{{}}/randomization/floor"
    try:
        first = floor_client.post(floor_path.format(subjects[0]), json={}, headers=inv.headers)
        assert first.status_code == 201, first.get_json()
        assert first.get_json()["seq_no"] == 2
        assert "arm_code" not in first.get_json()  # the blinded receipt
        with counted(engine) as floor:  # the head this process wrote last is the guess
            second = floor_client.post(floor_path.format(subjects[1]), json={},
                                       headers=inv.headers)  # fmt: skip
        assert second.status_code == 201, second.get_json()
        api(client, inv, "POST", path.format(subjects[2]), {}, 201)  # the head moved: stale
        with counted(db.engine) as real:
            api(client, inv, "POST", path.format(subjects[3]), {}, 201)
        again = floor_client.post(floor_path.format(subjects[1]), json={}, headers=inv.headers)
        assert again.status_code == 409, again.get_json()
    finally:
        engine.dispose()
    # the same 7 statements, the same SQL but for the parameters' names (6 + one multi-row
    # visit insert)
    assert len(real) == 7, real
    assert [_unnamed(s) for s in floor] == [_unnamed(s) for s in real]
    db.session.remove()
    trial = db.session.scalars(select(Trial).where(Trial.code == MCI_CODE)).one()
    seq_nos = db.session.scalars(
        select(Allocation.seq_no).where(Allocation.trial_id == trial.id).order_by(Allocation.seq_no)
    ).all()
    assert seq_nos == [1, 2, 3, 4, 5]
    visits = dict(
        db.session.execute(
            select(Participant.subject_code, func.count(Visit.id))
            .join(Visit, Visit.participant_id == Participant.id)
            .where(Participant.subject_code.in_(subjects), Participant.status == "randomized")
            .group_by(Participant.subject_code)
        ).all()
    )
    assert len(visits) == 4 and len(set(visits.values())) == 1, visits  # floor's = API's
    assert randomization.replay_problems(db.session, trial) == []
    report = audit.verify(db.session)
    assert report.ok, report.problems


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_floor_behind_the_api_stack_answers_as_the_api(client: FlaskClient) -> None:
    staff = load_trial(client)
    inv = staff["inv"]
    path = "/participants/{}/randomization"
    api(client, inv, "POST", path.format(enrolled_mci_participant(client, staff)), {}, 201)
    subjects = [enrolled_mci_participant(client, staff) for _ in range(3)]
    api(client, inv, "POST", path.format(subjects[0]), {}, 201)  # the real endpoint's
    url = db.engine.url.render_as_string(hide_password=False)
    # an app configured as the test client's, on the same database (the same users and
    # tokens), with the floor's route
    floor_app = create_api_floor_app(app_config(url))
    floor_client = floor_app.test_client()
    floor_path = f"/api/v1/trials/{MCI_CODE}/participants/{{}}/randomization/floor"
    with floor_app.app_context():
        engine = db.engine
    try:
        with counted(engine) as floor:
            first = floor_client.post(floor_path.format(subjects[1]), json={},
                                      headers=inv.headers)  # fmt: skip
        assert first.status_code == 201, first.get_json()
        receipt = first.get_json()
        assert receipt["seq_no"] == 3 and "arm_code" not in receipt  # the blinded receipt
        assert receipt["allocated_at"].startswith("20")  # the API's ISO 8601, by its schema
        keyed = {**inv.headers, "Idempotency-Key": "floor-retry-1"}
        second = floor_client.post(floor_path.format(subjects[2]), json={}, headers=keyed)
        replayed = floor_client.post(floor_path.format(subjects[2]), json={}, headers=keyed)
        assert second.status_code == replayed.status_code == 201
        assert replayed.headers["Idempotent-Replayed"] == "true"  # @idempotent, as the API
        assert replayed.get_json() == second.get_json()
        refused = floor_client.post(floor_path.format(subjects[1]), json={}, headers=inv.headers)
        assert refused.status_code == 409  # the API's error shape
        assert refused.get_json()["message"] == "participant is already randomized"
        anonymous = floor_client.post(floor_path.format(subjects[1]), json={})
        assert anonymous.status_code == 401  # the API's authentication
        unknown = floor_client.post(floor_path.format(subjects[1]), json={"arm": "active"},
                                    headers=inv.headers)  # fmt: skip
        assert unknown.status_code == 422  # the API's argument schema
    finally:
        engine.dispose()
    # the bearer token's read (the app's own token cache starts empty), then the
    # randomization's statements, nothing else
    assert floor[0].startswith("SELECT api_token.id") and len(floor) == 1 + 7, floor
    db.session.remove()
    trial = db.session.scalars(select(Trial).where(Trial.code == MCI_CODE)).one()
    seq_nos = db.session.scalars(
        select(Allocation.seq_no).where(Allocation.trial_id == trial.id).order_by(Allocation.seq_no)
    ).all()
    assert seq_nos == [1, 2, 3, 4]
    assert randomization.replay_problems(db.session, trial) == []
    report = audit.verify(db.session)
    assert report.ok, report.problems


def _unnamed(statement: str) -> str:
    return re.sub(r"%\(\w+\)s", "%(?)s", statement)
