"""a service credential is live once a second administrator approved it

Revision ID: c3e8f1a27b94
Revises: a61f0c2e8d37
Create Date: 2026-12-07 20:00:00.000000

Credentials made before this revision have no approval: they wait for one (a second
administrator approves each, `POST .../service-credentials/{id}/approval`), no approval is
made up for them. Columns added and dropped in place (no table rebuild: app tokens refer to
the table).
"""

from alembic import op
import sqlalchemy as sa


revision = 'c3e8f1a27b94'
down_revision = 'a61f0c2e8d37'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('service_credential', sa.Column('approved_at', sa.DateTime(), nullable=True))
    op.add_column('service_credential', sa.Column('approved_by_id', sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column('service_credential', 'approved_by_id')
    op.drop_column('service_credential', 'approved_at')
