"""two-person approval of membership grants

Revision ID: 8a4d2c6e1f37
Revises: 3c1e9a7b5d20
Create Date: 2026-12-05 03:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '8a4d2c6e1f37'
down_revision = '3c1e9a7b5d20'
branch_labels = None
depends_on = None

def upgrade() -> None:
    with op.batch_alter_table('membership', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requested_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('pending_since', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('approved_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('approved_at', sa.DateTime(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_membership_requested_by_id_user'), 'user', ['requested_by_id'], ['id']
        )
        batch_op.create_foreign_key(
            batch_op.f('fk_membership_approved_by_id_user'), 'user', ['approved_by_id'], ['id']
        )


def downgrade() -> None:
    with op.batch_alter_table('membership', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_membership_approved_by_id_user'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_membership_requested_by_id_user'), type_='foreignkey')
        batch_op.drop_column('approved_at')
        batch_op.drop_column('approved_by_id')
        batch_op.drop_column('pending_since')
        batch_op.drop_column('requested_by_id')
