"""trial operations: visit times and missed visits, protocol deviations, consent signer phone

Revision ID: 7d3f9a1c2e64
Revises: 7b2e4f9a1c63
Create Date: 2026-12-05 05:20:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '7d3f9a1c2e64'
down_revision = '7b2e4f9a1c63'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('visit', schema=None) as batch_op:
        batch_op.add_column(sa.Column('actual_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('missed_reason', sa.Text(), nullable=True))

    with op.batch_alter_table('consent', schema=None) as batch_op:
        batch_op.add_column(sa.Column('signer_phone', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('method', sa.String(length=20), nullable=False,
                                      server_default='in_person'))
        batch_op.add_column(sa.Column('pdf', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('pdf_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('countersigned_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('countersigned_at', sa.DateTime(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_consent_countersigned_by_id_user'), 'user',
                                    ['countersigned_by_id'], ['id'])
    with op.batch_alter_table('consent', schema=None) as batch_op:
        batch_op.alter_column('method', server_default=None)

    op.create_table(
        'consent_invitation',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('participant_id', sa.Integer(), nullable=False),
        sa.Column('document_id', sa.String(length=60), nullable=False),
        sa.Column('consent_version', sa.String(length=40), nullable=False),
        sa.Column('language', sa.String(length=10), nullable=False),
        sa.Column('signer_role', sa.String(length=40), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('otp_hash', sa.String(length=64), nullable=True),
        sa.Column('channel', sa.String(length=10), nullable=False),
        sa.Column('address', sa.LargeBinary(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('created_by_id', sa.Integer(), nullable=True),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.Column('opened_at', sa.DateTime(), nullable=True),
        sa.Column('code_sent_at', sa.DateTime(), nullable=True),
        sa.Column('signed_at', sa.DateTime(), nullable=True),
        sa.Column('consent_id', sa.Integer(), nullable=True),
        sa.Column('revoked_at', sa.DateTime(), nullable=True),
        sa.Column('meta', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['consent_id'], ['consent.id'],
                                name=op.f('fk_consent_invitation_consent_id_consent')),
        sa.ForeignKeyConstraint(['created_by_id'], ['user.id'],
                                name=op.f('fk_consent_invitation_created_by_id_user')),
        sa.ForeignKeyConstraint(['participant_id'], ['participant.id'],
                                name=op.f('fk_consent_invitation_participant_id_participant')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_consent_invitation')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_consent_invitation_token_hash')),
    )
    with op.batch_alter_table('consent_invitation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consent_invitation_participant_id'),
                              ['participant_id'], unique=False)

    op.create_table(
        'protocol_deviation',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('trial_id', sa.Integer(), nullable=False),
        sa.Column('site_id', sa.Integer(), nullable=False),
        sa.Column('participant_id', sa.Integer(), nullable=False),
        sa.Column('visit_id', sa.Integer(), nullable=True),
        sa.Column('kind', sa.String(length=40), nullable=False),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('days_outside', sa.Integer(), nullable=True),
        sa.Column('detected_at', sa.DateTime(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('reviewed_at', sa.DateTime(), nullable=True),
        sa.Column('reviewed_by_id', sa.Integer(), nullable=True),
        sa.Column('review_note', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['participant_id'], ['participant.id'],
                                name=op.f('fk_protocol_deviation_participant_id_participant')),
        sa.ForeignKeyConstraint(['reviewed_by_id'], ['user.id'],
                                name=op.f('fk_protocol_deviation_reviewed_by_id_user')),
        sa.ForeignKeyConstraint(['site_id'], ['site.id'],
                                name=op.f('fk_protocol_deviation_site_id_site')),
        sa.ForeignKeyConstraint(['trial_id'], ['trial.id'],
                                name=op.f('fk_protocol_deviation_trial_id_trial')),
        sa.ForeignKeyConstraint(['visit_id'], ['visit.id'],
                                name=op.f('fk_protocol_deviation_visit_id_visit')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_protocol_deviation')),
    )
    with op.batch_alter_table('protocol_deviation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_protocol_deviation_participant_id'),
                              ['participant_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_protocol_deviation_site_id'), ['site_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_protocol_deviation_trial_id'), ['trial_id'],
                              unique=False)


    op.create_table(
        'safety_event',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('trial_id', sa.Integer(), nullable=False),
        sa.Column('site_id', sa.Integer(), nullable=False),
        sa.Column('participant_id', sa.Integer(), nullable=False),
        sa.Column('form_record_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('rule_id', sa.String(length=60), nullable=False),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('detected_at', sa.DateTime(), nullable=False),
        sa.Column('due_at', sa.DateTime(), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('acknowledged_at', sa.DateTime(), nullable=True),
        sa.Column('acknowledged_by_id', sa.Integer(), nullable=True),
        sa.Column('reported_at', sa.DateTime(), nullable=True),
        sa.Column('reported_by_id', sa.Integer(), nullable=True),
        sa.Column('causality', sa.String(length=20), nullable=True),
        sa.Column('expectedness', sa.String(length=20), nullable=True),
        sa.Column('narrative', sa.Text(), nullable=True),
        sa.Column('escalated_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['acknowledged_by_id'], ['user.id'],
                                name=op.f('fk_safety_event_acknowledged_by_id_user')),
        sa.ForeignKeyConstraint(['form_record_id'], ['form_record.id'],
                                name=op.f('fk_safety_event_form_record_id_form_record')),
        sa.ForeignKeyConstraint(['participant_id'], ['participant.id'],
                                name=op.f('fk_safety_event_participant_id_participant')),
        sa.ForeignKeyConstraint(['reported_by_id'], ['user.id'],
                                name=op.f('fk_safety_event_reported_by_id_user')),
        sa.ForeignKeyConstraint(['site_id'], ['site.id'],
                                name=op.f('fk_safety_event_site_id_site')),
        sa.ForeignKeyConstraint(['trial_id'], ['trial.id'],
                                name=op.f('fk_safety_event_trial_id_trial')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_safety_event')),
    )
    with op.batch_alter_table('safety_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_safety_event_participant_id'), ['participant_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_safety_event_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_safety_event_trial_id'), ['trial_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('safety_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_safety_event_trial_id'))
        batch_op.drop_index(batch_op.f('ix_safety_event_site_id'))
        batch_op.drop_index(batch_op.f('ix_safety_event_participant_id'))
    op.drop_table('safety_event')

    with op.batch_alter_table('protocol_deviation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_protocol_deviation_trial_id'))
        batch_op.drop_index(batch_op.f('ix_protocol_deviation_site_id'))
        batch_op.drop_index(batch_op.f('ix_protocol_deviation_participant_id'))
    op.drop_table('protocol_deviation')

    with op.batch_alter_table('consent_invitation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consent_invitation_participant_id'))
    op.drop_table('consent_invitation')

    with op.batch_alter_table('consent', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_consent_countersigned_by_id_user'),
                                 type_='foreignkey')
        batch_op.drop_column('countersigned_at')
        batch_op.drop_column('countersigned_by_id')
        batch_op.drop_column('pdf_sha256')
        batch_op.drop_column('pdf')
        batch_op.drop_column('method')
        batch_op.drop_column('signer_phone')

    with op.batch_alter_table('visit', schema=None) as batch_op:
        batch_op.drop_column('missed_reason')
        batch_op.drop_column('actual_at')
