"""the caps' counters: an integer in the state row and a row per site, not a JSON of every site

Revision ID: a61f0c2e8d37
Revises: 7b3e5a1c9d42
Create Date: 2026-12-06 09:30:00.000000

The counters are derived from the allocations: counted here from the active allocations, as
`audit verify` recounts them.
"""

from alembic import op
import sqlalchemy as sa


revision = 'a61f0c2e8d37'
down_revision = '7b3e5a1c9d42'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'randomization_site_count',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('trial_id', sa.Integer(), nullable=False),
        sa.Column('site_id', sa.Integer(), nullable=False),
        sa.Column('active_allocations', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['site_id'], ['site.id'],
                                name=op.f('fk_randomization_site_count_site_id_site')),
        sa.ForeignKeyConstraint(['trial_id'], ['trial.id'],
                                name=op.f('fk_randomization_site_count_trial_id_trial')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_randomization_site_count')),
        sa.UniqueConstraint('site_id', name=op.f('uq_randomization_site_count_site_id')),
    )
    op.create_index(op.f('ix_randomization_site_count_trial_id'), 'randomization_site_count',
                    ['trial_id'], unique=False)
    with op.batch_alter_table('randomization_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('active_allocations', sa.Integer(), server_default='0',
                                      nullable=False))
    op.execute(
        "UPDATE randomization_state SET active_allocations = (SELECT count(*) FROM allocation "
        "WHERE allocation.trial_id = randomization_state.trial_id "
        "AND allocation.status = 'allocated')"
    )
    op.execute(
        "INSERT INTO randomization_site_count (trial_id, site_id, active_allocations) "
        "SELECT allocation.trial_id, participant.site_id, count(*) FROM allocation "
        "JOIN participant ON participant.id = allocation.participant_id "
        "WHERE allocation.status = 'allocated' "
        "GROUP BY allocation.trial_id, participant.site_id"
    )
    with op.batch_alter_table('randomization_state', schema=None) as batch_op:
        batch_op.drop_column('cap_counts')


def downgrade() -> None:
    # NULL: not counted yet; the earlier code counts the active allocations at the next one
    with op.batch_alter_table('randomization_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cap_counts', sa.JSON(), nullable=True))
        batch_op.drop_column('active_allocations')
    op.drop_index(op.f('ix_randomization_site_count_trial_id'),
                  table_name='randomization_site_count')
    op.drop_table('randomization_site_count')
