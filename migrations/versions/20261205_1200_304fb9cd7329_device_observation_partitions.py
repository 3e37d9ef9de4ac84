"""device_observation partitioned by month on PostgreSQL (SQLite unchanged)

Revision ID: 304fb9cd7329
Revises: 5d2a9c7e4b13
Create Date: 2026-12-05 12:00:00.000000

The rows are copied aside, the plain table is replaced by a table partitioned by range of
observed_at with the same columns, names, indexes and id sequence, the default partition and
one partition per month present (plus the current month and three ahead) are created, and the
rows go back with their ids. Why the keys stay valid: dtx_trials/services/device_partitions.py.
"""

import datetime

from alembic import op

from dtx_trials.services.device_partitions import ensure_partitions

revision = '304fb9cd7329'
down_revision = '5d2a9c7e4b13'
branch_labels = None
depends_on = None

COLUMNS = ("id, trial_id, participant_id, stream, observed_at, value, unit, source, "
           "received_at, batch_id, seal")
BODY = """
    id integer NOT NULL DEFAULT nextval('device_observation_id_seq'),
    trial_id integer NOT NULL,
    participant_id integer NOT NULL,
    stream varchar(60) NOT NULL,
    observed_at timestamp without time zone NOT NULL,
    value double precision NOT NULL,
    unit varchar(30) NOT NULL,
    source varchar(60) NOT NULL,
    received_at timestamp without time zone NOT NULL,
    batch_id varchar(32),
    seal varchar(80),
    CONSTRAINT fk_device_observation_participant_id_participant
        FOREIGN KEY (participant_id) REFERENCES participant (id),
    CONSTRAINT fk_device_observation_trial_id_trial FOREIGN KEY (trial_id) REFERENCES trial (id),
    CONSTRAINT uq_device_observation_participant_id_stream_observed_at_source
        UNIQUE (participant_id, stream, observed_at, source),
"""


def _replace(create: str) -> None:
    """Copy the rows aside, drop the table (keeping its id sequence), run ``create``, restore
    the sequence's ownership and the indexes. The rows go back in by the caller."""
    op.execute(f"CREATE TEMPORARY TABLE device_observation_copy ON COMMIT DROP AS "
               f"SELECT {COLUMNS} FROM device_observation")
    op.execute("ALTER SEQUENCE device_observation_id_seq OWNED BY NONE")
    op.execute("DROP TABLE device_observation")
    op.execute(create)
    op.execute("ALTER SEQUENCE device_observation_id_seq OWNED BY device_observation.id")
    op.execute("CREATE INDEX ix_device_observation_trial_id ON device_observation (trial_id)")
    op.execute("CREATE INDEX ix_device_observation_batch_id ON device_observation (batch_id)")


def _restore_rows() -> None:
    op.execute(f"INSERT INTO device_observation ({COLUMNS}) "
               f"SELECT {COLUMNS} FROM device_observation_copy")
    op.execute("DROP TABLE device_observation_copy")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    _replace(
        f"CREATE TABLE device_observation ({BODY}"
        "    CONSTRAINT pk_device_observation PRIMARY KEY (id, observed_at)\n"
        ") PARTITION BY RANGE (observed_at)"
    )
    months = bind.exec_driver_sql(
        "SELECT DISTINCT date_trunc('month', observed_at)::date FROM device_observation_copy"
    ).scalars().all()
    ensure_partitions(bind, today=datetime.datetime.now(datetime.UTC).date(), ahead=3,
                      also=months)
    _restore_rows()


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    _replace(  # dropping the partitioned table drops its partitions
        f"CREATE TABLE device_observation ({BODY}"
        "    CONSTRAINT pk_device_observation PRIMARY KEY (id)\n"
        ")"
    )
    _restore_rows()
