"""outbox priority: records are claimed before end-of-session notes

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_OPEN = sa.text("status IN ('pending', 'in_progress')")


def upgrade() -> None:
    # Derived from the kind: 0 = a record or an outcome event, 1 = an end-of-session note,
    # so a burst of notes never makes a due record wait.
    op.add_column('outbox', sa.Column(
        'priority', sa.SmallInteger(),
        sa.Computed("CASE WHEN kind = 'ended_note' THEN 1 ELSE 0 END", persisted=True), nullable=False,
    ))
    op.drop_index('ix_outbox_due', table_name='outbox', postgresql_where=_OPEN)
    op.create_index('ix_outbox_due', 'outbox', ['priority', 'due_at', 'id'], unique=False, postgresql_where=_OPEN)


def downgrade() -> None:
    op.drop_index('ix_outbox_due', table_name='outbox', postgresql_where=_OPEN)
    op.create_index('ix_outbox_due', 'outbox', ['due_at', 'id'], unique=False, postgresql_where=_OPEN)
    op.drop_column('outbox', 'priority')
