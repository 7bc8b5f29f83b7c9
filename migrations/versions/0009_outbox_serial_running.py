"""outbox: an index of the rows being carried out by serial key, so the claim's check
"is another row of this key in progress" reads those few rows, not the key's whole run

Revision ID: 0009_outbox
Revises: 0008_crm
"""
from alembic import op
import sqlalchemy as sa

revision = '0009_outbox'
down_revision = '0008_crm'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        'ix_outbox_serial_running', 'outbox', ['serial_key'], unique=False,
        postgresql_where=sa.text("status = 'in_progress'"),
    )


def downgrade() -> None:
    op.drop_index('ix_outbox_serial_running', table_name='outbox', postgresql_where=sa.text("status = 'in_progress'"))
