"""account activation links: staff choose their own password

Revision ID: 7b2e4f9a1c63
Revises: 5c1e0a7b9d21
Create Date: 2026-12-05 03:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '7b2e4f9a1c63'
down_revision = '5c1e0a7b9d21'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('activation_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('activation_expires_at', sa.DateTime(), nullable=True))
        batch_op.create_index('ix_user_activation_sha256', ['activation_sha256'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.drop_index('ix_user_activation_sha256')
        batch_op.drop_column('activation_expires_at')
        batch_op.drop_column('activation_sha256')
