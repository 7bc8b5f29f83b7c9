"""outbox: the worker's bookkeeping in one statement, committing alone

A batch of finished rows was written in a transaction of three or four round trips:
BEGIN, the sessions' rows locked (when records were made), the write, COMMIT, and rolled
back when a row's claim had run out (another worker claimed the row since). The write
now locks the sessions' rows itself, in session id order, and checks the claims itself:
when a row is no longer held by its claim it calls `outbox_claims_lost()`, whose error
rolls the whole statement back, as the transaction was.

Revision ID: 0014_outbox
Revises: 0013_sessions
"""
from alembic import op

revision = '0014_outbox'
down_revision = '0013_sessions'
branch_labels = None
depends_on = None

# 55000 (object not in prerequisite state): a row is no longer in progress under the
# claim the worker holds.
CLAIMS_LOST = """
CREATE FUNCTION outbox_claims_lost(p_held integer, p_claims integer)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    RAISE EXCEPTION 'outbox bookkeeping: % of % rows still held by their claims', p_held, p_claims
        USING ERRCODE = 'object_not_in_prerequisite_state';
END
$$
"""


def upgrade() -> None:
    op.execute(CLAIMS_LOST)


def downgrade() -> None:
    op.execute("DROP FUNCTION outbox_claims_lost(integer, integer)")
