"""consumer: a batch's write checks the settings version it folded with

A consumer that remembers the states it saved (and the settings in force it read) folds
a steady stream's batch without reading them again; its write then checks what it
would have read: every state over the version remembered (a session presumed new has
no row), and the settings in force still the version folded with. When the settings
moved, the write calls `consumer_settings_moved()`, whose error rolls the whole
statement back, and the batch is applied again the locked way, as after any other
conflict (`consumer_batch_conflict()`, migration 0013).

Revision ID: 0015_consumer
Revises: 0014_outbox
"""
from alembic import op

revision = '0015_consumer'
down_revision = '0014_outbox'
branch_labels = None
depends_on = None

# 40001, as consumer_batch_conflict: the batch read something another transaction changed.
SETTINGS_MOVED = """
CREATE FUNCTION consumer_settings_moved(p_folded_with integer, p_in_force integer)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    RAISE EXCEPTION 'consumer batch conflict: folded with settings version %, version % is in force',
        coalesce(p_folded_with::text, 'none'), coalesce(p_in_force::text, 'none')
        USING ERRCODE = 'serialization_failure';
END
$$
"""


def upgrade() -> None:
    op.execute(SETTINGS_MOVED)


def downgrade() -> None:
    op.execute("DROP FUNCTION consumer_settings_moved(integer, integer)")
