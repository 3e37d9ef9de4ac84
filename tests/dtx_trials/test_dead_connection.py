"""Issue #13: what a dead database connection becomes, deterministically, on PostgreSQL.

The reliability suites found these by chance under load (a plain-text 500 from gunicorn when
the rollback in Flask-SQLAlchemy's teardown met a connection killed by a restart or by
``pg_terminate_backend``). Here the request's own backend is terminated at a chosen point,
and the test waits until PostgreSQL has really ended it, so each case runs the same every time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask, Response
from flask.testing import FlaskClient
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine

from dtx_trials.extensions import db
from dtx_trials.models import Participant
from tests.conftest import make_test_app
from tests.dtx_trials.trial_flow import MCI_CODE, TrialStaff, load_trial

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
BASE = f"/api/v1/trials/{MCI_CODE}"


@pytest.fixture
def admin(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def kill_request_backend(admin: Engine) -> None:
    """Terminate the backend serving this request's session and wait until it is gone."""
    pid = db.session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
    _terminate(admin, [pid])


def app_with_hook(database_url: str, when: str, hook: Callable[[], None]) -> Flask:
    """A second app on the same database whose requests run ``hook`` before the view or after
    it (before teardown). Requests push their own app context, so teardown runs per request."""
    fresh = make_test_app(database_url)
    if when == "before_view":
        fresh.before_request(hook)
    else:

        def after(response: Response) -> Response:
            hook()
            return response

        fresh.after_request(after)
    return fresh


def test_rel_02_a_connection_dead_at_teardown_is_not_a_500(
    database_url: str, client: FlaskClient, admin: Engine
) -> None:
    """The view answered; the connection died before teardown rolled back. The answer stands
    (it used to be replaced by the WSGI server's plain-text 500)."""
    staff = load_trial(client)
    fresh = app_with_hook(database_url, "after_view", lambda: kill_request_backend(admin))
    own = fresh.test_client()
    for _ in range(3):
        response = own.get(BASE, headers=staff["sponsor"].headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json()["code"] == MCI_CODE
    with fresh.app_context():
        db.engine.dispose()


def test_rel_02_a_connection_dead_inside_the_view_is_a_json_503(
    database_url: str, client: FlaskClient, admin: Engine
) -> None:
    staff = load_trial(client)
    fresh = app_with_hook(database_url, "before_view", lambda: kill_request_backend(admin))
    response = fresh.test_client().get(f"{BASE}/participants", headers=staff["sponsor"].headers)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    body = response.get_json()
    assert body["code"] == 503 and "retry" in body["message"]
    with fresh.app_context():
        db.engine.dispose()


def test_rel_02_a_create_cut_off_by_a_dead_connection_is_safe_to_retry(
    database_url: str, app: Flask, client: FlaskClient, admin: Engine
) -> None:
    """The create is one unit of work committed last: a connection lost on the way is a 503
    with nothing written, and the retry with the same key creates exactly one participant."""
    staff: TrialStaff = load_trial(client)
    fresh = app_with_hook(database_url, "before_view", lambda: kill_request_backend(admin))
    headers = {**staff["inv"].headers, "Idempotency-Key": "cut-off-1"}
    cut = fresh.test_client().post(f"{BASE}/participants", json={"site": "BJ01"}, headers=headers)
    assert cut.status_code == 503

    def participants() -> int:
        db.session.rollback()
        return int(db.session.scalar(select(func.count()).select_from(Participant)) or 0)

    assert participants() == 0
    first = client.post(f"{BASE}/participants", json={"site": "BJ01"}, headers=headers)
    again = client.post(f"{BASE}/participants", json={"site": "BJ01"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.get_json() == first.get_json()
    assert participants() == 1
    with fresh.app_context():
        db.engine.dispose()


def _pooled_backend_pids(app: Flask, n: int) -> list[int]:
    """Check out n connections of the app's pool at once (so n distinct ones), return their
    backends' pids, and give them back to the pool (idle there)."""
    with app.app_context():
        connections = [db.engine.connect() for _ in range(n)]
        try:
            return [c.exec_driver_sql("SELECT pg_backend_pid()").scalar() for c in connections]
        finally:
            for connection in connections:
                connection.close()


def _terminate(admin: Engine, pids: list[int]) -> None:
    """Terminate these backends and wait until PostgreSQL has really ended them."""
    with admin.connect() as conn:
        for pid in pids:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        for _ in range(500):
            alive = conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                {"pids": pids},
            ).scalar()
            if not alive:
                return
            time.sleep(0.01)
    raise AssertionError(f"backends {pids} still alive")


def test_rel_02_pooled_connections_the_server_ended_are_replaced_before_use(
    database_url: str, client: FlaskClient, admin: Engine
) -> None:
    """A restart or pg_terminate_backend while the connections sit in the pool: the next
    requests are answered (200), not 503, on fresh connections."""
    staff = load_trial(client)
    fresh = make_test_app(database_url)
    own = fresh.test_client()
    assert own.get(BASE, headers=staff["sponsor"].headers).status_code == 200
    ended = _pooled_backend_pids(fresh, 3)
    _terminate(admin, ended)
    for _ in range(3):
        response = own.get(f"{BASE}/participants", headers=staff["sponsor"].headers)
        assert response.status_code == 200, response.get_data(as_text=True)
    now = _pooled_backend_pids(fresh, 3)
    assert not set(now) & set(ended)
    with fresh.app_context():
        db.engine.dispose()


def test_a_live_pooled_connection_is_used_without_a_round_trip(
    database_url: str, client: FlaskClient, tmp_path: Path
) -> None:
    """The check at checkout sends nothing on a live connection (the pool's pre-ping sent
    SELECT 1 before every request): libpq's own trace of the pooled connection shows the
    request's statements and nothing before them."""
    staff = load_trial(client)
    fresh = make_test_app(database_url)
    own = fresh.test_client()
    assert own.get(BASE, headers=staff["sponsor"].headers).status_code == 200
    trace = tmp_path / "libpq.trace"
    with fresh.app_context(), db.engine.connect() as conn:
        # the pool's one idle connection, traced from now on
        pgconn = conn.connection.dbapi_connection.pgconn  # type: ignore[union-attr]
    with trace.open("w") as out:
        pgconn.trace(out.fileno())
        try:
            assert own.get(BASE, headers=staff["sponsor"].headers).status_code == 200
        finally:
            pgconn.untrace()
    with fresh.app_context():
        db.engine.dispose()
    sent = [line.split("\t") for line in trace.read_text().splitlines()]
    queries = [fields[4] for fields in sent if len(fields) > 4 and fields[1] == "F"
               and fields[3] in ("Query", "Parse")]  # fmt: skip
    # BEGIN, then the request's first statement (the trial's lookup); the pre-ping sent ";"
    # first (SQLAlchemy's ping on psycopg)
    assert len(queries) >= 2, trace.read_text()[:2000]
    assert queries[0].strip() == '"BEGIN"', queries
    assert "FROM trial" in queries[1] or "SELECT trial." in queries[1], queries
