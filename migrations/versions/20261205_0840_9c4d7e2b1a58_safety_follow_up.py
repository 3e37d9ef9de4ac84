"""SAE follow-up reports

Revision ID: 9c4d7e2b1a58
Revises: 3e8b1f6c2a95
Create Date: 2026-12-05 08:40:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '9c4d7e2b1a58'
down_revision = '3e8b1f6c2a95'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'safety_follow_up',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('safety_event_id', sa.Integer(), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('reported_at', sa.DateTime(), nullable=False),
        sa.Column('reported_by_id', sa.Integer(), nullable=True),
        sa.Column('causality', sa.String(length=20), nullable=False),
        sa.Column('expectedness', sa.String(length=20), nullable=False),
        sa.Column('outcome', sa.String(length=30), nullable=False),
        sa.Column('narrative', sa.Text(), nullable=False),
        sa.Column('is_final', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['safety_event_id'], ['safety_event.id'],
                                name=op.f('fk_safety_follow_up_safety_event_id_safety_event')),
        sa.ForeignKeyConstraint(['reported_by_id'], ['user.id'],
                                name=op.f('fk_safety_follow_up_reported_by_id_user')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_safety_follow_up')),
        sa.UniqueConstraint('safety_event_id', 'number',
                            name=op.f('uq_safety_follow_up_safety_event_id_number')),
    )
    with op.batch_alter_table('safety_follow_up', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_safety_follow_up_safety_event_id'),
                              ['safety_event_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('safety_follow_up', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_safety_follow_up_safety_event_id'))
    op.drop_table('safety_follow_up')
