"""analysis report

Revision ID: d716e0f6bf8c
Revises: f997940e055b
Create Date: 2026-11-23 20:59:53.019373
"""

from alembic import op
import sqlalchemy as sa


revision = 'd716e0f6bf8c'
down_revision = 'f997940e055b'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('analysis_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('report_pdf', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('report_name', sa.String(length=80), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('analysis_run', schema=None) as batch_op:
        batch_op.drop_column('report_name')
        batch_op.drop_column('report_pdf')

