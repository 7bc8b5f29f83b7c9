"""settings history: the actor is the token's name; the caller's own note beside it

Revision ID: 0003_http_actor_note
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = '0003_http_actor_note'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('settings_versions', sa.Column('actor_note', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('settings_versions', 'actor_note')
