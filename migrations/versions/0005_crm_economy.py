"""CRM economy: the end-user mapping per CRM account, the shared rate budget, and the
outbox columns that fence a claim and say whether an earlier attempt's outcome is unknown

Revision ID: 0005_crm_economy
Revises: 0004_ops
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0005_crm_economy'
down_revision = '0004_ops'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Keyed by the CRM account (e.g. "zendesk:https://acme.zendesk.com"), not the CRM's
    # name: two accounts of one vendor have different user ids.
    op.create_table(
        'crm_end_users',
        sa.Column('crm_account', sa.Text(), nullable=False),
        sa.Column('end_user_id', sa.Text(), nullable=False),
        sa.Column('crm_user_id', sa.Text(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('crm_account', 'end_user_id'),
    )
    # The per-CRM-name contacts it replaces are not carried over: a name is not an
    # account, and a missing mapping only costs one look-up.
    op.drop_table('crm_contacts')
    op.create_table(
        'crm_rate_budgets',
        sa.Column('account', sa.Text(), nullable=False),
        # The next free request slot (GCRA's theoretical arrival time).
        sa.Column('next_slot', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('per_minute', sa.Float(), nullable=True),
        sa.Column('paused_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('account'),
    )
    op.add_column('outbox', sa.Column('claim_id', postgresql.UUID(as_uuid=False), nullable=True))
    op.add_column('outbox', sa.Column('outcome_unknown', sa.Boolean(), server_default=sa.text('false'),
                                      nullable=False))
    # The sandbox writes each end-of-session note once: a retry's insert finds its key.
    op.add_column('sandbox_notes', sa.Column('idempotency_key', sa.Text(), nullable=True))
    op.create_unique_constraint('uq_sandbox_notes_idempotency_key', 'sandbox_notes', ['idempotency_key'])


def downgrade() -> None:
    op.drop_constraint('uq_sandbox_notes_idempotency_key', 'sandbox_notes', type_='unique')
    op.drop_column('sandbox_notes', 'idempotency_key')
    op.drop_column('outbox', 'outcome_unknown')
    op.drop_column('outbox', 'claim_id')
    op.drop_table('crm_rate_budgets')
    op.create_table(
        'crm_contacts',
        sa.Column('crm', sa.Text(), nullable=False),
        sa.Column('end_user_id', sa.Text(), nullable=False),
        sa.Column('contact_id', sa.Text(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('crm', 'end_user_id'),
    )
    op.drop_table('crm_end_users')
