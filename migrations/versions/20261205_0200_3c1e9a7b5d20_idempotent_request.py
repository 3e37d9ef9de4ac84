"""idempotent request: the first answer to each idempotency key

Revision ID: 3c1e9a7b5d20
Revises: d716e0f6bf8c
Create Date: 2026-12-05 02:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '3c1e9a7b5d20'
down_revision = 'd716e0f6bf8c'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'idempotent_request',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('scope', sa.String(length=40), nullable=False),
        sa.Column('key', sa.String(length=128), nullable=False),
        sa.Column('fingerprint', sa.String(length=64), nullable=False),
        sa.Column('method', sa.String(length=10), nullable=False),
        sa.Column('path', sa.String(length=500), nullable=False),
        sa.Column('response', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotent_request')),
        sa.UniqueConstraint('scope', 'key', name=op.f('uq_idempotent_request_scope_key')),
    )


def downgrade() -> None:
    op.drop_table('idempotent_request')
