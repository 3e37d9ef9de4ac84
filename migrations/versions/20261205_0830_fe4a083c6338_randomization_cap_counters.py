"""randomization cap counters in the locked state row

Revision ID: fe4a083c6338
Revises: c0d1e8a4b7f2
Create Date: 2026-12-05 08:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = 'fe4a083c6338'
down_revision = 'c0d1e8a4b7f2'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: not counted yet; the next allocation counts the active allocations once
    with op.batch_alter_table('randomization_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cap_counts', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('randomization_state', schema=None) as batch_op:
        batch_op.drop_column('cap_counts')
