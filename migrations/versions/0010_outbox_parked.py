"""outbox: an index of the parked rows, so counting the backlog (the operations gauges,
every few seconds on every replica) reads the open and parked rows, not every row done

Revision ID: 0010_outbox
Revises: 0009_outbox
"""
from alembic import op
import sqlalchemy as sa

revision = '0010_outbox'
down_revision = '0009_outbox'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_outbox_parked', 'outbox', ['id'], unique=False, postgresql_where=sa.text("status = 'parked'"))


def downgrade() -> None:
    op.drop_index('ix_outbox_parked', table_name='outbox', postgresql_where=sa.text("status = 'parked'"))
