"""List first pages: audit filter choices by skip scan, query inbox in raised order

Revision ID: 5d2a9c7e4b13
Revises: 9c4d7e2b1a58
Create Date: 2026-12-05 12:00:00.000000
"""

from alembic import op


revision = '5d2a9c7e4b13'
down_revision = '9c4d7e2b1a58'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain CREATE INDEX (no batch mode): the trail's append-only triggers stay as they are
    op.create_index('ix_audit_event_chain_entity_type_action', 'audit_event',
                    ['chain', 'entity_type', 'action'], unique=False)
    op.create_index('ix_data_query_raised_at_id', 'data_query', ['raised_at', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_data_query_raised_at_id', table_name='data_query')
    op.drop_index('ix_audit_event_chain_entity_type_action', table_name='audit_event')
