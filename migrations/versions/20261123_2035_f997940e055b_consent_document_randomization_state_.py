"""consent document, randomization state and list

Revision ID: f997940e055b
Revises: 77849ae92e5a
Create Date: 2026-11-23 20:35:54.262372
"""

from alembic import op
import sqlalchemy as sa


revision = 'f997940e055b'
down_revision = '77849ae92e5a'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('consent', schema=None) as batch_op:
        batch_op.add_column(sa.Column('document_id', sa.String(length=60), nullable=False,
                                      server_default='consent'))

    with op.batch_alter_table('randomization_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state', sa.JSON(), nullable=False,
                                      server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column('list_table', sa.JSON(), nullable=True))

    # NOT NULL columns are added with a server default for existing rows, then the default goes.
    with op.batch_alter_table('consent', schema=None) as batch_op:
        batch_op.alter_column('document_id', server_default=None)
        batch_op.alter_column('signer_role', existing_type=sa.String(length=20),
                              type_=sa.String(length=40), existing_nullable=False)
    with op.batch_alter_table('randomization_state', schema=None) as batch_op:
        batch_op.alter_column('state', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('randomization_state', schema=None) as batch_op:
        batch_op.drop_column('list_table')
        batch_op.drop_column('state')

    with op.batch_alter_table('consent', schema=None) as batch_op:
        batch_op.alter_column('signer_role', existing_type=sa.String(length=40),
                              type_=sa.String(length=20), existing_nullable=False)
        batch_op.drop_column('document_id')

