"""sessions: a state version, so a consumer batch can be applied without row locks

A consumer batch was one transaction of five round trips: BEGIN, its dedup rows, its
sessions' states locked, its writes, COMMIT. It is now two statements, each committing
alone: a read of what the batch needs (the ids already seen, the settings in force, the
states and their versions), then one statement that writes everything and checks that
nothing it read has changed since (every new event id inserted, every state saved over
the version it was read at). When something has, the statement fails whole with
`consumer_batch_conflict()`'s serialization failure and the batch is applied again the
locked way. Only a consumer writes `state`, so the version moves only with it; the
worker's bookkeeping (the session's record) does not move it.

Revision ID: 0013_sessions
Revises: 0012_outbox
"""
from alembic import op

revision = '0013_sessions'
down_revision = '0012_outbox'
branch_labels = None
depends_on = None

# SQL cannot raise an error of its own choosing; a batch's statement calls this when its
# check fails, and the error rolls the whole statement back. 40001, as a serializable
# transaction's conflict: the batch read something another transaction changed.
CONFLICT = """
CREATE FUNCTION consumer_batch_conflict(p_new_events integer, p_events integer, p_saved integer, p_states integer)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    RAISE EXCEPTION 'consumer batch conflict: % of % new event ids inserted, % of % states saved at the version read',
        p_new_events, p_events, p_saved, p_states
        USING ERRCODE = 'serialization_failure';
END
$$
"""


def upgrade() -> None:
    # A constant default: PostgreSQL adds the column without rewriting the table.
    op.execute("ALTER TABLE sessions ADD COLUMN state_version bigint NOT NULL DEFAULT 0")
    op.execute(CONFLICT)


def downgrade() -> None:
    op.execute("DROP FUNCTION consumer_batch_conflict(integer, integer, integer, integer)")
    op.execute("ALTER TABLE sessions DROP COLUMN state_version")
