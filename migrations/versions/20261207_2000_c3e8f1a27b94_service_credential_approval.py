"""a service credential is live once a second administrator approved it

Revision ID: c3e8f1a27b94
Revises: a61f0c2e8d37
Create Date: 2026-12-07 20:00:00.000000

Credentials made before this revision have no approval: they wait for one (a second
administrator approves each, `POST .../service-credentials/{id}/approval`), no approval is
made up for them.
"""

from alembic import op
import sqlalchemy as sa


revision = 'c3e8f1a27b94'
down_revision = 'a61f0c2e8d37'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('service_credential', schema=None) as batch_op:
        batch_op.add_column(sa.Column('approved_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('approved_by_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_service_credential_approved_by_id_user'), 'user',
            ['approved_by_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('service_credential', schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f('fk_service_credential_approved_by_id_user'), type_='foreignkey')
        batch_op.drop_column('approved_by_id')
        batch_op.drop_column('approved_at')
