"""crm: the CRM access token shared by every replica (Salesforce's OAuth token), so one
token serves all replicas and survives restarts until the CRM refuses it

Revision ID: 0008_crm
Revises: 0007_console
"""
from alembic import op
import sqlalchemy as sa

revision = '0008_crm'
down_revision = '0007_console'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'crm_tokens',
        sa.Column('account', sa.Text(), nullable=False),
        sa.Column('access_token', sa.Text(), nullable=False),
        sa.Column('instance_url', sa.Text(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('account'),
    )


def downgrade() -> None:
    op.drop_table('crm_tokens')
