"""perf: when an outbox row was last claimed, so the way from a decision to the CRM
call can be split into waiting for a worker and the work itself

Revision ID: 0006_perf
Revises: 0005_crm_economy
"""
from alembic import op
import sqlalchemy as sa

revision = '0006_perf'
down_revision = '0005_crm_economy'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('outbox', sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('outbox', 'claimed_at')
