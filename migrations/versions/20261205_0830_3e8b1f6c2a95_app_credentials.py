"""app credentials: participant app tokens and service credentials

Revision ID: 3e8b1f6c2a95
Revises: fe4a083c6338
Create Date: 2026-12-05 08:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '3e8b1f6c2a95'
down_revision = 'fe4a083c6338'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'service_credential',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('trial_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('client_id', sa.String(length=40), nullable=False),
        sa.Column('secret_hash', sa.String(length=64), nullable=False),
        sa.Column('scope', sa.String(length=40), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('created_by_id', sa.Integer(), nullable=True),
        sa.Column('revoked_at', sa.DateTime(), nullable=True),
        sa.Column('revoked_by_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['trial_id'], ['trial.id'],
                                name=op.f('fk_service_credential_trial_id_trial')),
        sa.ForeignKeyConstraint(['created_by_id'], ['user.id'],
                                name=op.f('fk_service_credential_created_by_id_user')),
        sa.ForeignKeyConstraint(['revoked_by_id'], ['user.id'],
                                name=op.f('fk_service_credential_revoked_by_id_user')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_service_credential')),
        sa.UniqueConstraint('client_id', name=op.f('uq_service_credential_client_id')),
    )
    with op.batch_alter_table('service_credential', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_service_credential_trial_id'), ['trial_id'],
                              unique=False)

    op.create_table(
        'app_token',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('trial_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('participant_id', sa.Integer(), nullable=True),
        sa.Column('allocation_id', sa.Integer(), nullable=True),
        sa.Column('credential_id', sa.Integer(), nullable=True),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.Column('revoked_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['trial_id'], ['trial.id'],
                                name=op.f('fk_app_token_trial_id_trial')),
        sa.ForeignKeyConstraint(['participant_id'], ['participant.id'],
                                name=op.f('fk_app_token_participant_id_participant')),
        sa.ForeignKeyConstraint(['allocation_id'], ['allocation.id'],
                                name=op.f('fk_app_token_allocation_id_allocation')),
        sa.ForeignKeyConstraint(['credential_id'], ['service_credential.id'],
                                name=op.f('fk_app_token_credential_id_service_credential')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_app_token')),
        sa.UniqueConstraint('allocation_id', name=op.f('uq_app_token_allocation_id')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_app_token_token_hash')),
    )
    with op.batch_alter_table('app_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_app_token_trial_id'), ['trial_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_app_token_participant_id'), ['participant_id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('app_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_app_token_participant_id'))
        batch_op.drop_index(batch_op.f('ix_app_token_trial_id'))
    op.drop_table('app_token')
    with op.batch_alter_table('service_credential', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_service_credential_trial_id'))
    op.drop_table('service_credential')
