"""Monthly partitions of ``device_observation`` on PostgreSQL (SQLite: one plain table).

Wearables and DTx apps send readings every minute or so: years of them make one table whose
indexes stop fitting in memory. On PostgreSQL the table is range-partitioned by the month of
``observed_at`` (declarative partitioning): a month's rows and index entries sit together, a
query over a period (analysis, export, the verify of a batch) reads only its months, and an old
month can be detached and archived whole.

Keys. PostgreSQL requires every unique constraint of a partitioned table to include the
partition key, since each partition enforces it alone. The idempotency key ``(participant_id,
stream, observed_at, source)`` already includes ``observed_at``: it stays the table's unique
constraint and the ``ON CONFLICT`` arbiter of the COPY ingest (``services.devices``), so a
reading sent twice is still stored once, whatever partition it lands in (both copies route to
the same partition by their equal ``observed_at``). The primary key becomes ``(id,
observed_at)``: ``id`` still comes from one sequence, so it remains unique across partitions
by itself and the ORM keeps mapping ``id`` alone (the models are the same on both databases;
Alembic does not compare primary keys).

No insert ever fails for want of a partition: a DEFAULT partition takes any month not created
yet. `ensure_partitions` (``dtx devices partitions --months-ahead 3``, run daily from cron)
creates the partitions of the current month and the months ahead, and moves rows that landed
in the default partition (a month not created in time, a clock far off) into their month's
partition. Creating a partition locks ``device_observation`` briefly (ingest waits, it does not
fail); creating them ahead keeps that off the month boundary.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, text

PARENT = "device_observation"
DEFAULT = "device_observation_default"
# every table this module creates; Alembic leaves them out of its model comparison
PARTITION_NAME = re.compile(r"^device_observation_(default|y\d{4}m\d{2})$")
_LOCK_KEY = 0x44_45_56_50  # "DEVP": one maintenance run at a time (advisory lock)


@dataclass(frozen=True)
class PartitionReport:
    created: tuple[str, ...]  # partitions created by this run, in month order
    moved: int  # rows moved from the default partition into a month's partition
    existing: tuple[str, ...]  # every partition after the run


def partition_name(month: datetime.date) -> str:
    return f"{PARENT}_y{month.year:04d}m{month.month:02d}"


def month_start(day: datetime.date) -> datetime.date:
    return day.replace(day=1)


def next_month(month: datetime.date) -> datetime.date:
    return (month.replace(day=28) + datetime.timedelta(days=4)).replace(day=1)


def months_ahead(today: datetime.date, ahead: int) -> list[datetime.date]:
    """The first days of the current month and of the ``ahead`` months after it."""
    if ahead < 0:
        raise ValueError("months ahead must be 0 or more")
    months = [month_start(today)]
    for _ in range(ahead):
        months.append(next_month(months[-1]))
    return months


def is_partitioned(connection: Connection) -> bool:
    if connection.dialect.name != "postgresql":
        return False
    kind = connection.execute(
        text("SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(:name)"),
        {"name": PARENT},
    ).scalar()
    return kind == "p"


def partitions(connection: Connection) -> list[str]:
    rows = connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:name) ORDER BY c.relname"
        ),
        {"name": PARENT},
    )
    return [str(name) for (name,) in rows]


def ensure_partitions(
    connection: Connection,
    *,
    today: datetime.date,
    ahead: int,
    also: Iterable[datetime.date] = (),
) -> PartitionReport:
    """Create the default partition, the partitions of the current month, the ``ahead`` months
    after it, the months in ``also`` and every month found in the default partition (whose rows
    move there). Idempotent: a second run creates nothing and moves nothing.

    Runs in the caller's transaction; raises ValueError where the table is not partitioned
    (SQLite, or a database not migrated yet)."""
    if not is_partitioned(connection):
        raise ValueError(f"{PARENT} is not a partitioned table (PostgreSQL only)")
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    existing = set(partitions(connection))
    if DEFAULT not in existing:
        connection.execute(text(f"CREATE TABLE {DEFAULT} PARTITION OF {PARENT} DEFAULT"))
        existing.add(DEFAULT)
    stranded = connection.execute(
        text(f"SELECT DISTINCT date_trunc('month', observed_at)::date FROM {DEFAULT}")
    ).scalars()
    wanted = {*months_ahead(today, ahead), *(month_start(m) for m in also), *stranded}
    created: list[str] = []
    moved = 0
    for month in sorted(wanted):
        name = partition_name(month)
        if name in existing:
            continue
        moved += _create_month(connection, month)
        created.append(name)
        existing.add(name)
    return PartitionReport(tuple(created), moved, tuple(sorted(existing)))


def _create_month(connection: Connection, month: datetime.date) -> int:
    """Create one month's partition; rows of that month already in the default partition
    would violate its new bound, so they move out first and back in (routed to the new
    partition), ids and every column unchanged, in the same transaction."""
    bounds = {"low": datetime.datetime.combine(month, datetime.time()),
              "high": datetime.datetime.combine(next_month(month), datetime.time())}
    name = partition_name(month)
    connection.execute(text(
        f"CREATE TEMPORARY TABLE {PARENT}_moving (LIKE {PARENT}) ON COMMIT DROP"
    ))
    moved = connection.execute(text(
        f"WITH moved AS (DELETE FROM {DEFAULT} WHERE observed_at >= :low AND observed_at < :high "
        f"RETURNING *) INSERT INTO {PARENT}_moving SELECT * FROM moved"
    ), bounds).rowcount
    low, high = (bounds[k].isoformat(sep=" ") for k in ("low", "high"))
    connection.execute(text(
        f"CREATE TABLE {name} PARTITION OF {PARENT} FOR VALUES FROM ('{low}') TO ('{high}')"
    ))
    if moved:
        connection.execute(text(f"INSERT INTO {PARENT} SELECT * FROM {PARENT}_moving"))
    connection.execute(text(f"DROP TABLE {PARENT}_moving"))
    return int(moved)
