"""trust layer: keyed audit hashes with authorship, key-check values, device batches

Revision ID: 5c1e0a7b9d21
Revises: 5c1e7d2a9b40
Create Date: 2026-12-01 10:00:00
"""

from alembic import op
import sqlalchemy as sa



revision = '5c1e0a7b9d21'
down_revision = '5c1e7d2a9b40'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auth_ref', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('key_id', sa.String(length=16), nullable=True))
    op.create_table(
        'key_check',
        sa.Column('kid', sa.String(length=16), nullable=False),
        sa.Column('kcv', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=10), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('retired_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('kid', name=op.f('pk_key_check')),
    )
    with op.batch_alter_table('device_observation', schema=None) as batch_op:
        batch_op.add_column(sa.Column('batch_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('seal', sa.String(length=80), nullable=True))
        batch_op.create_index(batch_op.f('ix_device_observation_batch_id'), ['batch_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('device_observation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_observation_batch_id'))
        batch_op.drop_column('seal')
        batch_op.drop_column('batch_id')
    op.drop_table('key_check')
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.drop_column('key_id')
        batch_op.drop_column('auth_ref')
