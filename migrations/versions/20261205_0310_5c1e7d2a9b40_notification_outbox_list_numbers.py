"""notification outbox; randomization numbers of uploaded allocation lists

Revision ID: 5c1e7d2a9b40
Revises: 8a4d2c6e1f37
Create Date: 2026-12-05 02:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '5c1e7d2a9b40'
down_revision = '8a4d2c6e1f37'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'notification',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('trial_id', sa.Integer(), nullable=True),
        sa.Column('kind', sa.String(length=60), nullable=False),
        sa.Column('channel', sa.String(length=10), nullable=False),
        sa.Column('recipient_user_id', sa.Integer(), nullable=True),
        sa.Column('recipient_role', sa.String(length=40), nullable=True),
        sa.Column('address', sa.LargeBinary(), nullable=True),
        sa.Column('subject', sa.LargeBinary(), nullable=False),
        sa.Column('body', sa.LargeBinary(), nullable=False),
        sa.Column('entity_type', sa.String(length=40), nullable=True),
        sa.Column('entity_id', sa.Integer(), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('provider_id', sa.String(length=200), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('sent_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['recipient_user_id'], ['user.id'],
                                name=op.f('fk_notification_recipient_user_id_user')),
        sa.ForeignKeyConstraint(['trial_id'], ['trial.id'],
                                name=op.f('fk_notification_trial_id_trial')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_notification')),
    )
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.create_index('ix_notification_status_next_attempt_at',
                              ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_notification_trial_id'), ['trial_id'], unique=False)

    with op.batch_alter_table('randomization_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('list_numbers', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('randomization_state', schema=None) as batch_op:
        batch_op.drop_column('list_numbers')

    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notification_trial_id'))
        batch_op.drop_index('ix_notification_status_next_attempt_at')

    op.drop_table('notification')
