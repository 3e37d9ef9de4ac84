"""randomization design state by stratum: one row per stratum

Revision ID: 7b3e5a1c9d42
Revises: 304fb9cd7329
Create Date: 2026-12-06 01:00:00.000000

A trial's strata move out of its randomization_state row as they are next allocated in or
voided (the service writes, and audits, the move), so no row is rewritten here.
"""

from alembic import op
import sqlalchemy as sa


revision = '7b3e5a1c9d42'
down_revision = '304fb9cd7329'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'randomization_stratum',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('trial_id', sa.Integer(), nullable=False),
        sa.Column('stratum_key', sa.String(length=300), nullable=False),
        sa.Column('state', sa.JSON(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['trial_id'], ['trial.id'],
                                name=op.f('fk_randomization_stratum_trial_id_trial')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_randomization_stratum')),
        sa.UniqueConstraint('trial_id', 'stratum_key',
                            name=op.f('uq_randomization_stratum_trial_id_stratum_key')),
    )


def downgrade() -> None:
    # the strata's design states live only in these rows: refuse rather than lose them
    if op.get_bind().execute(sa.text('SELECT 1 FROM randomization_stratum LIMIT 1')).first():
        raise RuntimeError(
            'randomization_stratum has rows (the design state of strata allocated in since '
            'the upgrade): this downgrade would lose them'
        )
    op.drop_table('randomization_stratum')
