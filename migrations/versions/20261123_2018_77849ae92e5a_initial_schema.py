"""initial schema

Revision ID: 77849ae92e5a
Revises: 
Create Date: 2026-11-23 20:18:56.000405
"""

from alembic import op
import sqlalchemy as sa


revision = '77849ae92e5a'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_chain_head',
    sa.Column('chain', sa.String(length=40), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('chain', name=op.f('pk_audit_chain_head'))
    )
    op.create_table('audit_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('chain', sa.String(length=40), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('trial_id', sa.Integer(), nullable=True),
    sa.Column('site_id', sa.Integer(), nullable=True),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('actor_name', sa.String(length=200), nullable=False),
    sa.Column('actor_role', sa.String(length=30), nullable=True),
    sa.Column('op', sa.String(length=10), nullable=False),
    sa.Column('action', sa.String(length=60), nullable=False),
    sa.Column('entity_type', sa.String(length=40), nullable=False),
    sa.Column('entity_id', sa.Integer(), nullable=True),
    sa.Column('changes', sa.JSON(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('request_id', sa.String(length=80), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_event')),
    sa.UniqueConstraint('chain', 'seq', name=op.f('uq_audit_event_chain_seq'))
    )
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_event_trial_id'), ['trial_id'], unique=False)

    op.create_table('trial',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('blinding', sa.String(length=10), nullable=False),
    sa.Column('active_protocol_version_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trial')),
    sa.UniqueConstraint('code', name=op.f('uq_trial_code'))
    )
    op.create_table('user',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=80), nullable=False),
    sa.Column('printed_name', sa.String(length=200), nullable=False),
    sa.Column('email', sa.String(length=200), nullable=True),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('is_superuser', sa.Boolean(), nullable=False),
    sa.Column('language', sa.String(length=5), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(), nullable=True),
    sa.Column('password_changed_at', sa.DateTime(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user')),
    sa.UniqueConstraint('username', name=op.f('uq_user_username'))
    )
    op.create_table('api_token',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.Column('last_used_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], name=op.f('fk_api_token_user_id_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_token')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_token_token_hash'))
    )
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_token_user_id'), ['user_id'], unique=False)

    op.create_table('protocol_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('trial_id', sa.Integer(), nullable=False),
    sa.Column('version_no', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('source_name', sa.String(length=300), nullable=False),
    sa.Column('source_text', sa.Text(), nullable=False),
    sa.Column('content', sa.JSON(), nullable=False),
    sa.Column('accepted_migrations', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('activated_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name=op.f('fk_protocol_version_created_by_id_user')),
    sa.ForeignKeyConstraint(['trial_id'], ['trial.id'], name=op.f('fk_protocol_version_trial_id_trial')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_protocol_version')),
    sa.UniqueConstraint('trial_id', 'sha256', name=op.f('uq_protocol_version_trial_id_sha256')),
    sa.UniqueConstraint('trial_id', 'version_no', name=op.f('uq_protocol_version_trial_id_version_no'))
    )
    with op.batch_alter_table('protocol_version', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_protocol_version_trial_id'), ['trial_id'], unique=False)

    with op.batch_alter_table('trial', schema=None) as batch_op:
        batch_op.create_foreign_key(
            batch_op.f('fk_trial_active_protocol_version_id_protocol_version'),
            'protocol_version', ['active_protocol_version_id'], ['id'])

    op.create_table('site',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('trial_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('name_zh', sa.String(length=200), nullable=True),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('timezone', sa.String(length=60), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['trial_id'], ['trial.id'], name=op.f('fk_site_trial_id_trial')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_site')),
    sa.UniqueConstraint('trial_id', 'code', name=op.f('uq_site_trial_id_code'))
    )
    with op.batch_alter_table('site', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_site_trial_id'), ['trial_id'], unique=False)

    op.create_table('analysis_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('trial_id', sa.Integer(), nullable=False),
    sa.Column('protocol_version_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('is_unblinded', sa.Boolean(), nullable=False),
    sa.Column('cutoff_on', sa.Date(), nullable=True),
    sa.Column('progress', sa.Double(), nullable=False),
    sa.Column('requested_by_id', sa.Integer(), nullable=True),
    sa.Column('requested_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('data_sha256', sa.String(length=64), nullable=True),
    sa.Column('provenance', sa.JSON(), nullable=False),
    sa.Column('results', sa.JSON(), nullable=True),
    sa.Column('report_sha256', sa.String(length=64), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['protocol_version_id'], ['protocol_version.id'], name=op.f('fk_analysis_run_protocol_version_id_protocol_version')),
    sa.ForeignKeyConstraint(['requested_by_id'], ['user.id'], name=op.f('fk_analysis_run_requested_by_id_user')),
    sa.ForeignKeyConstraint(['trial_id'], ['trial.id'], name=op.f('fk_analysis_run_trial_id_trial')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_analysis_run'))
    )
    with op.batch_alter_table('analysis_run', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_analysis_run_trial_id'), ['trial_id'], unique=False)

    op.create_table('membership',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('trial_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=True),
    sa.Column('role', sa.String(length=30), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_membership_site_id_site')),
    sa.ForeignKeyConstraint(['trial_id'], ['trial.id'], name=op.f('fk_membership_trial_id_trial')),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], name=op.f('fk_membership_user_id_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_membership')),
    sa.UniqueConstraint('user_id', 'trial_id', 'site_id', 'role', name=op.f('uq_membership_user_id_trial_id_site_id_role'))
    )
    with op.batch_alter_table('membership', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_membership_trial_id'), ['trial_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_membership_user_id'), ['user_id'], unique=False)

    op.create_table('participant',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('trial_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('subject_code', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('protocol_version_id', sa.Integer(), nullable=True),
    sa.Column('screened_at', sa.DateTime(), nullable=False),
    sa.Column('consented_at', sa.DateTime(), nullable=True),
    sa.Column('enrolled_at', sa.DateTime(), nullable=True),
    sa.Column('randomized_at', sa.DateTime(), nullable=True),
    sa.Column('withdrawn_at', sa.DateTime(), nullable=True),
    sa.Column('withdrawal_reason', sa.Text(), nullable=True),
    sa.Column('is_emergency_unblinded', sa.Boolean(), nullable=False),
    sa.Column('full_name', sa.LargeBinary(), nullable=True),
    sa.Column('phone', sa.LargeBinary(), nullable=True),
    sa.Column('email', sa.LargeBinary(), nullable=True),
    sa.Column('national_id', sa.LargeBinary(), nullable=True),
    sa.Column('address', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['protocol_version_id'], ['protocol_version.id'], name=op.f('fk_participant_protocol_version_id_protocol_version')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_participant_site_id_site')),
    sa.ForeignKeyConstraint(['trial_id'], ['trial.id'], name=op.f('fk_participant_trial_id_trial')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_participant')),
    sa.UniqueConstraint('trial_id', 'subject_code', name=op.f('uq_participant_trial_id_subject_code'))
    )
    with op.batch_alter_table('participant', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_participant_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_participant_trial_id'), ['trial_id'], unique=False)

    op.create_table('randomization_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('trial_id', sa.Integer(), nullable=False),
    sa.Column('next_seq', sa.Integer(), nullable=False),
    sa.Column('rng_algorithm', sa.String(length=30), nullable=False),
    sa.Column('secret', sa.LargeBinary(), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['model_version'], ['protocol_version.id'], name=op.f('fk_randomization_state_model_version_protocol_version')),
    sa.ForeignKeyConstraint(['trial_id'], ['trial.id'], name=op.f('fk_randomization_state_trial_id_trial')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_randomization_state')),
    sa.UniqueConstraint('trial_id', name=op.f('uq_randomization_state_trial_id'))
    )
    op.create_table('allocation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('trial_id', sa.Integer(), nullable=False),
    sa.Column('participant_id', sa.Integer(), nullable=False),
    sa.Column('protocol_version_id', sa.Integer(), nullable=False),
    sa.Column('seq_no', sa.Integer(), nullable=False),
    sa.Column('stratum_key', sa.String(length=300), nullable=False),
    sa.Column('factors', sa.JSON(), nullable=False),
    sa.Column('method', sa.String(length=30), nullable=False),
    sa.Column('arm_code', sa.String(length=40), nullable=False),
    sa.Column('randomization_number', sa.String(length=40), nullable=False),
    sa.Column('activation_code', sa.String(length=40), nullable=True),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('request_id', sa.String(length=80), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('void_reason', sa.Text(), nullable=True),
    sa.Column('allocated_at', sa.DateTime(), nullable=False),
    sa.Column('allocated_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['allocated_by_id'], ['user.id'], name=op.f('fk_allocation_allocated_by_id_user')),
    sa.ForeignKeyConstraint(['participant_id'], ['participant.id'], name=op.f('fk_allocation_participant_id_participant')),
    sa.ForeignKeyConstraint(['protocol_version_id'], ['protocol_version.id'], name=op.f('fk_allocation_protocol_version_id_protocol_version')),
    sa.ForeignKeyConstraint(['trial_id'], ['trial.id'], name=op.f('fk_allocation_trial_id_trial')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_allocation')),
    sa.UniqueConstraint('trial_id', 'participant_id', name=op.f('uq_allocation_trial_id_participant_id')),
    sa.UniqueConstraint('trial_id', 'randomization_number', name=op.f('uq_allocation_trial_id_randomization_number')),
    sa.UniqueConstraint('trial_id', 'request_id', name=op.f('uq_allocation_trial_id_request_id')),
    sa.UniqueConstraint('trial_id', 'seq_no', name=op.f('uq_allocation_trial_id_seq_no'))
    )
    with op.batch_alter_table('allocation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_allocation_trial_id'), ['trial_id'], unique=False)

    op.create_table('consent',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('participant_id', sa.Integer(), nullable=False),
    sa.Column('consent_version', sa.String(length=40), nullable=False),
    sa.Column('language', sa.String(length=5), nullable=False),
    sa.Column('signer_role', sa.String(length=20), nullable=False),
    sa.Column('signer_name', sa.LargeBinary(), nullable=True),
    sa.Column('signed_at', sa.DateTime(), nullable=False),
    sa.Column('recorded_by_id', sa.Integer(), nullable=True),
    sa.Column('withdrawn_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['participant_id'], ['participant.id'], name=op.f('fk_consent_participant_id_participant')),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['user.id'], name=op.f('fk_consent_recorded_by_id_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consent'))
    )
    with op.batch_alter_table('consent', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consent_participant_id'), ['participant_id'], unique=False)

    op.create_table('device_observation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('trial_id', sa.Integer(), nullable=False),
    sa.Column('participant_id', sa.Integer(), nullable=False),
    sa.Column('stream', sa.String(length=60), nullable=False),
    sa.Column('observed_at', sa.DateTime(), nullable=False),
    sa.Column('value', sa.Double(), nullable=False),
    sa.Column('unit', sa.String(length=30), nullable=False),
    sa.Column('source', sa.String(length=60), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['participant_id'], ['participant.id'], name=op.f('fk_device_observation_participant_id_participant')),
    sa.ForeignKeyConstraint(['trial_id'], ['trial.id'], name=op.f('fk_device_observation_trial_id_trial')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_observation')),
    sa.UniqueConstraint('participant_id', 'stream', 'observed_at', 'source', name=op.f('uq_device_observation_participant_id_stream_observed_at_source'))
    )
    with op.batch_alter_table('device_observation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_device_observation_trial_id'), ['trial_id'], unique=False)

    op.create_table('visit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('participant_id', sa.Integer(), nullable=False),
    sa.Column('visit_code', sa.String(length=40), nullable=False),
    sa.Column('occurrence', sa.Integer(), nullable=False),
    sa.Column('is_unscheduled', sa.Boolean(), nullable=False),
    sa.Column('planned_on', sa.Date(), nullable=True),
    sa.Column('window_start_on', sa.Date(), nullable=True),
    sa.Column('window_end_on', sa.Date(), nullable=True),
    sa.Column('actual_on', sa.Date(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.ForeignKeyConstraint(['participant_id'], ['participant.id'], name=op.f('fk_visit_participant_id_participant')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_visit')),
    sa.UniqueConstraint('participant_id', 'visit_code', 'occurrence', name=op.f('uq_visit_participant_id_visit_code_occurrence'))
    )
    with op.batch_alter_table('visit', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_visit_participant_id'), ['participant_id'], unique=False)

    op.create_table('epro_link',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('participant_id', sa.Integer(), nullable=False),
    sa.Column('visit_id', sa.Integer(), nullable=True),
    sa.Column('form_code', sa.String(length=60), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('otp_hash', sa.String(length=64), nullable=True),
    sa.Column('channel', sa.String(length=10), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('opened_at', sa.DateTime(), nullable=True),
    sa.Column('completed_at', sa.DateTime(), nullable=True),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name=op.f('fk_epro_link_created_by_id_user')),
    sa.ForeignKeyConstraint(['participant_id'], ['participant.id'], name=op.f('fk_epro_link_participant_id_participant')),
    sa.ForeignKeyConstraint(['visit_id'], ['visit.id'], name=op.f('fk_epro_link_visit_id_visit')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_epro_link')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_epro_link_token_hash'))
    )
    with op.batch_alter_table('epro_link', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_epro_link_participant_id'), ['participant_id'], unique=False)

    op.create_table('form_record',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('participant_id', sa.Integer(), nullable=False),
    sa.Column('visit_id', sa.Integer(), nullable=True),
    sa.Column('form_code', sa.String(length=60), nullable=False),
    sa.Column('repeat_index', sa.Integer(), nullable=False),
    sa.Column('protocol_version_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('submitted_at', sa.DateTime(), nullable=True),
    sa.Column('device_time', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['participant_id'], ['participant.id'], name=op.f('fk_form_record_participant_id_participant')),
    sa.ForeignKeyConstraint(['protocol_version_id'], ['protocol_version.id'], name=op.f('fk_form_record_protocol_version_id_protocol_version')),
    sa.ForeignKeyConstraint(['visit_id'], ['visit.id'], name=op.f('fk_form_record_visit_id_visit')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_form_record')),
    sa.UniqueConstraint('participant_id', 'visit_id', 'form_code', 'repeat_index', name=op.f('uq_form_record_participant_id_visit_id_form_code_repeat_index'))
    )
    with op.batch_alter_table('form_record', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_form_record_participant_id'), ['participant_id'], unique=False)

    op.create_table('data_query',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('form_record_id', sa.Integer(), nullable=False),
    sa.Column('field', sa.String(length=120), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('origin', sa.String(length=20), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('answer', sa.Text(), nullable=True),
    sa.Column('raised_by_id', sa.Integer(), nullable=True),
    sa.Column('raised_at', sa.DateTime(), nullable=False),
    sa.Column('answered_by_id', sa.Integer(), nullable=True),
    sa.Column('answered_at', sa.DateTime(), nullable=True),
    sa.Column('closed_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['answered_by_id'], ['user.id'], name=op.f('fk_data_query_answered_by_id_user')),
    sa.ForeignKeyConstraint(['form_record_id'], ['form_record.id'], name=op.f('fk_data_query_form_record_id_form_record')),
    sa.ForeignKeyConstraint(['raised_by_id'], ['user.id'], name=op.f('fk_data_query_raised_by_id_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_query'))
    )
    with op.batch_alter_table('data_query', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_data_query_form_record_id'), ['form_record_id'], unique=False)

    op.create_table('signature',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('form_record_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('printed_name', sa.String(length=200), nullable=False),
    sa.Column('meaning', sa.String(length=40), nullable=False),
    sa.Column('signed_at', sa.DateTime(), nullable=False),
    sa.Column('record_version', sa.Integer(), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('invalidated_at', sa.DateTime(), nullable=True),
    sa.Column('invalidated_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['form_record_id'], ['form_record.id'], name=op.f('fk_signature_form_record_id_form_record')),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], name=op.f('fk_signature_user_id_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signature')),
    sa.UniqueConstraint('form_record_id', 'record_version', 'user_id', 'meaning', name=op.f('uq_signature_form_record_id_record_version_user_id_meaning'))
    )
    with op.batch_alter_table('signature', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signature_form_record_id'), ['form_record_id'], unique=False)

    op.create_table('web_session',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('epro_link_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['epro_link_id'], ['epro_link.id'], name=op.f('fk_web_session_epro_link_id_epro_link')),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], name=op.f('fk_web_session_user_id_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_web_session')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_web_session_token_hash'))
    )
    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_web_session_user_id'), ['user_id'], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        # The audit trail is append-only even for someone holding the app's credentials.
        op.execute("""
            CREATE FUNCTION audit_event_refuse_change() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'audit_event is append-only (% refused)', TG_OP;
            END $$ LANGUAGE plpgsql
        """)
        op.execute("""
            CREATE TRIGGER audit_event_append_only
            BEFORE UPDATE OR DELETE ON audit_event
            FOR EACH ROW EXECUTE FUNCTION audit_event_refuse_change()
        """)
        op.execute("""
            CREATE TRIGGER audit_event_no_truncate
            BEFORE TRUNCATE ON audit_event
            FOR EACH STATEMENT EXECUTE FUNCTION audit_event_refuse_change()
        """)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_event")
        op.execute("DROP TRIGGER IF EXISTS audit_event_append_only ON audit_event")
        op.execute("DROP FUNCTION IF EXISTS audit_event_refuse_change()")
    with op.batch_alter_table('trial', schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f('fk_trial_active_protocol_version_id_protocol_version'), type_='foreignkey')
    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_web_session_user_id'))

    op.drop_table('web_session')
    with op.batch_alter_table('signature', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signature_form_record_id'))

    op.drop_table('signature')
    with op.batch_alter_table('data_query', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_data_query_form_record_id'))

    op.drop_table('data_query')
    with op.batch_alter_table('form_record', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_form_record_participant_id'))

    op.drop_table('form_record')
    with op.batch_alter_table('epro_link', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_epro_link_participant_id'))

    op.drop_table('epro_link')
    with op.batch_alter_table('visit', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_visit_participant_id'))

    op.drop_table('visit')
    with op.batch_alter_table('device_observation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_observation_trial_id'))

    op.drop_table('device_observation')
    with op.batch_alter_table('consent', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consent_participant_id'))

    op.drop_table('consent')
    with op.batch_alter_table('allocation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_allocation_trial_id'))

    op.drop_table('allocation')
    op.drop_table('randomization_state')
    with op.batch_alter_table('participant', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_participant_trial_id'))
        batch_op.drop_index(batch_op.f('ix_participant_site_id'))

    op.drop_table('participant')
    with op.batch_alter_table('membership', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_membership_user_id'))
        batch_op.drop_index(batch_op.f('ix_membership_trial_id'))

    op.drop_table('membership')
    with op.batch_alter_table('analysis_run', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_analysis_run_trial_id'))

    op.drop_table('analysis_run')
    with op.batch_alter_table('site', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_site_trial_id'))

    op.drop_table('site')
    with op.batch_alter_table('protocol_version', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_protocol_version_trial_id'))

    op.drop_table('protocol_version')
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_token_user_id'))

    op.drop_table('api_token')
    op.drop_table('user')
    op.drop_table('trial')
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_event_trial_id'))

    op.drop_table('audit_event')
    op.drop_table('audit_chain_head')
