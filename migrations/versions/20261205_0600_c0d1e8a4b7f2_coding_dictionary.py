"""coding dictionary and coded terms (AE/con-med coding for SDTM)

Revision ID: c0d1e8a4b7f2
Revises: 7d3f9a1c2e64
Create Date: 2026-12-05 06:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = 'c0d1e8a4b7f2'
down_revision = '7d3f9a1c2e64'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'coding_dictionary_term',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('trial_id', sa.Integer(), nullable=False),
        sa.Column('dictionary', sa.String(length=60), nullable=False),
        sa.Column('version', sa.String(length=30), nullable=False),
        sa.Column('term', sa.String(length=200), nullable=False),
        sa.Column('term_key', sa.String(length=200), nullable=False),
        sa.Column('preferred_term', sa.String(length=200), nullable=False),
        sa.Column('body_system', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['trial_id'], ['trial.id'],
                                name=op.f('fk_coding_dictionary_term_trial_id_trial')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_coding_dictionary_term')),
        sa.UniqueConstraint('trial_id', 'dictionary', 'version', 'term_key',
                            name=op.f('uq_coding_dictionary_term_trial_id_dictionary_version_term_key')),
    )
    with op.batch_alter_table('coding_dictionary_term', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_coding_dictionary_term_trial_id'), ['trial_id'],
                              unique=False)
    op.create_table(
        'coded_term',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('trial_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('term_key', sa.String(length=200), nullable=False),
        sa.Column('verbatim', sa.String(length=200), nullable=False),
        sa.Column('preferred_term', sa.String(length=200), nullable=False),
        sa.Column('body_system', sa.String(length=200), nullable=False),
        sa.Column('dictionary', sa.String(length=60), nullable=False),
        sa.Column('version', sa.String(length=30), nullable=False),
        sa.Column('method', sa.String(length=10), nullable=False),
        sa.Column('coded_by_id', sa.Integer(), nullable=True),
        sa.Column('coded_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['coded_by_id'], ['user.id'],
                                name=op.f('fk_coded_term_coded_by_id_user')),
        sa.ForeignKeyConstraint(['trial_id'], ['trial.id'],
                                name=op.f('fk_coded_term_trial_id_trial')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_coded_term')),
        sa.UniqueConstraint('trial_id', 'kind', 'term_key',
                            name=op.f('uq_coded_term_trial_id_kind_term_key')),
    )
    with op.batch_alter_table('coded_term', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_coded_term_trial_id'), ['trial_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('coded_term', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_coded_term_trial_id'))
    op.drop_table('coded_term')
    with op.batch_alter_table('coding_dictionary_term', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_coding_dictionary_term_trial_id'))
    op.drop_table('coding_dictionary_term')
