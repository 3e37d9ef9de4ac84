"""the guardian's or legally authorized representative's phone and e-mail on the participant

Revision ID: d7a2c94e1f60
Revises: c3e8f1a27b94
Create Date: 2026-12-07 20:30:00.000000

Direct identifiers, encrypted as the participant's own: a consent signed for the participant
goes to the contact on record.
"""

from alembic import op
import sqlalchemy as sa


revision = 'd7a2c94e1f60'
down_revision = 'c3e8f1a27b94'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # in place, no table rebuild (every participant's rows refer to the table)
    op.add_column('participant', sa.Column('representative_phone', sa.LargeBinary(), nullable=True))
    op.add_column('participant', sa.Column('representative_email', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column('participant', 'representative_email')
    op.drop_column('participant', 'representative_phone')
