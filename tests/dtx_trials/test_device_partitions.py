"""device_observation partitioned by month on PostgreSQL: rows land in their month's
partition, the maintenance command is idempotent and drains the default partition, ingest still
deduplicates across partitions; SQLite keeps one plain table."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from dtx_trials.extensions import db
from dtx_trials.services.device_partitions import (
    DEFAULT,
    ensure_partitions,
    months_ahead,
    next_month,
    partition_name,
    partitions,
)
from dtx_trials.services.integrity import check_integrity
from tests.dtx_trials.test_devices import minutes, post
from tests.dtx_trials.trial_flow import enrolled_mci_participant, load_trial

TODAY = datetime.datetime.now(datetime.UTC).date()


@pytest.fixture
def dtx(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    from dtx_trials import cli as cli_module

    def with_test_app(func: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *a, **k: func(app, *a, **k)

    monkeypatch.setattr(cli_module, "with_app", with_test_app)
    return lambda *args: CliRunner().invoke(cli_module.cli, list(args))


def placement() -> dict[int, str]:
    """Stored row id -> the partition holding it (read transaction ended: the command's
    CREATE TABLE ... PARTITION OF waits for every reader of the table)."""
    with db.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, tableoid::regclass::text FROM device_observation")
        ).all()
    return {int(row_id): str(table) for row_id, table in rows}


def test_months_ahead_and_names() -> None:
    assert months_ahead(datetime.date(2026, 11, 30), 3) == [
        datetime.date(2026, 11, 1), datetime.date(2026, 12, 1), datetime.date(2027, 1, 1),
        datetime.date(2027, 2, 1),
    ]
    assert next_month(datetime.date(2026, 12, 1)) == datetime.date(2027, 1, 1)
    assert partition_name(datetime.date(2027, 1, 1)) == "device_observation_y2027m01"
    with pytest.raises(ValueError):
        months_ahead(TODAY, -1)


def test_partitions_rows_by_month_and_the_command_is_idempotent(
    client: FlaskClient, backend: str, dtx: Callable[..., Result]
) -> None:
    if backend == "sqlite":
        result = dtx("devices", "partitions")
        assert result.exit_code == 0 and "nothing to do" in result.output
        return
    # the migration made the default partition and this month plus three ahead
    with db.engine.begin() as connection:
        made = set(partitions(connection))
    assert {DEFAULT, *(partition_name(m) for m in months_ahead(TODAY, 3))} <= made

    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    earlier = TODAY.replace(day=1) - datetime.timedelta(days=1)  # last day of last month
    older = earlier.replace(day=1) - datetime.timedelta(days=1)  # the month before it
    days = [TODAY, earlier, older]
    batch = [minutes(subject, day, 10 + i) for i, day in enumerate(days)]
    assert post(client, staff, batch).get_json()["accepted"] == 3
    db.session.remove()  # the request's session ends its transaction, as after a request
    before = placement()
    by_day = dict(zip(days, sorted(before), strict=True))  # ids follow the batch order
    assert before[by_day[TODAY]] == partition_name(TODAY)
    # months not created yet land in the default partition: no insert fails
    for day in (earlier, older):
        expected = partition_name(day) if partition_name(day) in made else DEFAULT
        assert before[by_day[day]] == expected

    first = dtx("devices", "partitions", "--months-ahead", "2")
    assert first.exit_code == 0, first.output
    after = placement()
    assert set(after) == set(before)  # same rows, same ids
    assert {after[by_day[d]] for d in days} == {partition_name(d) for d in days}
    with db.engine.connect() as connection:
        assert connection.execute(text(f"SELECT count(*) FROM {DEFAULT}")).scalar() == 0

    again = dtx("devices", "partitions", "--months-ahead", "2")
    assert again.exit_code == 0
    assert "partitions created: none; rows moved out of the default partition: 0" in again.output
    assert placement() == after

    # the same readings again, and one new one: duplicates found in the month partitions
    repeat = post(client, staff, [*batch, minutes(subject, TODAY - datetime.timedelta(days=1), 5)])
    assert repeat.get_json() == {"accepted": 1, "duplicates": 3, "rejected": 0, "errors": []}
    assert check_integrity(db.session).ok  # moved rows keep their seals and batch roots


def test_ensure_partitions_refuses_an_unpartitioned_table(app: Flask, backend: str) -> None:
    with db.engine.connect() as connection:
        try:
            if backend == "postgresql":  # shadows the partitioned table in this session
                connection.execute(text("CREATE TEMPORARY TABLE device_observation (id integer)"))
            with pytest.raises(ValueError, match="not a partitioned"):
                ensure_partitions(connection, today=TODAY, ahead=1)
        finally:
            connection.rollback()  # the temporary table goes with the transaction


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_aud_05_dba_moving_or_editing_readings_across_partitions_is_detected(
    client: FlaskClient,
) -> None:
    """AUD-05 against a DBA who works on the monthly partitions themselves: a reading moved to
    another month (UPDATE of observed_at, or DELETE then INSERT into another partition), edited
    in place in its partition, copied into the default partition, two readings' months swapped,
    or a month's partition detached, is reported by the device batch check, naming the row."""
    from tests.dtx_trials.trust_helpers import problems_after

    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    last_month = TODAY.replace(day=1) - datetime.timedelta(days=1)
    batch = [minutes(subject, TODAY, 30), minutes(subject, last_month, 40),
             minutes(subject, TODAY - datetime.timedelta(days=1), 50)]  # fmt: skip
    assert post(client, staff, batch).get_json()["accepted"] == 3
    db.session.remove()
    _partition_months_of_the_batch()
    rows = placement()
    this_id, last_id = min(rows), min(rows) + 1
    this_part = rows[this_id]
    assert this_part == partition_name(TODAY) and rows[last_id] != this_part
    assert problems_after(lambda conn: None) == []

    def run(*sql: str) -> Callable[[Any], None]:
        return lambda conn: [conn.execute(text(s)) for s in sql] and None

    columns = ("id, trial_id, participant_id, stream, observed_at, value, unit, source, "
               "received_at, batch_id, seal")
    attacks = {
        "observed_at moved a month back (row moves partition)": (run(
            f"UPDATE device_observation SET observed_at = observed_at - interval '31 days' "
            f"WHERE id = {this_id}"), f"id={this_id}: observed_at changed"),
        "deleted, inserted into another month's partition": (run(
            f"CREATE TEMP TABLE moved ON COMMIT DROP AS SELECT * FROM {this_part} "
            f"WHERE id = {this_id}",
            f"DELETE FROM {this_part} WHERE id = {this_id}",
            "UPDATE moved SET observed_at = observed_at - interval '31 days'",
            f"INSERT INTO {rows[last_id]} ({columns}) SELECT {columns} FROM moved"),
            f"id={this_id}: observed_at changed"),
        "value edited in its partition": (run(
            f"UPDATE {this_part} SET value = 31 WHERE id = {this_id}"),
            f"id={this_id}: value changed"),
        "a copy planted in the default partition (a month without one)": (run(
            f"INSERT INTO {DEFAULT} ({columns}) SELECT "
            + columns.replace("id,", "-id,", 1).replace(
                "observed_at", "observed_at - interval '5 years'")
            + f" FROM device_observation WHERE id = {last_id}"),
            f"id(s) -{last_id}: inserted into batch"),
        "two readings' times swapped across partitions": (run(
            "CREATE TEMP TABLE was ON COMMIT DROP AS SELECT id, observed_at "
            f"FROM device_observation WHERE id IN ({this_id}, {last_id})",
            "UPDATE device_observation SET observed_at = observed_at - interval '50 years' "
            f"WHERE id = {this_id}",  # parked in the default partition, off the unique key
            "UPDATE device_observation SET observed_at = "
            f"(SELECT observed_at FROM was WHERE id = {this_id}) WHERE id = {last_id}",
            "UPDATE device_observation SET observed_at = "
            f"(SELECT observed_at FROM was WHERE id = {last_id}) WHERE id = {this_id}"),
            f"id={last_id}: observed_at changed"),
        "this month's partition detached": (run(
            f"ALTER TABLE device_observation DETACH PARTITION {this_part}"),
            "deleted from batch"),
    }  # fmt: skip
    missed = []
    for name, (attack, must_name) in attacks.items():
        found = "\n".join(p.message for p in problems_after(attack))
        if must_name not in found:
            missed.append(f"{name}: expected {must_name!r} in {found[:300]!r}")
    assert not missed, "\n".join(missed)
    assert problems_after(lambda conn: None) == []  # every attack was rolled back


def _partition_months_of_the_batch() -> None:
    """Last month's reading moves from the default partition into its own month's."""
    with db.engine.begin() as connection:
        ensure_partitions(connection, today=TODAY, ahead=1,
                          also=[TODAY.replace(day=1) - datetime.timedelta(days=1)])  # fmt: skip
