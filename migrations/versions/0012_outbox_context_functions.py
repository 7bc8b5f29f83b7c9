"""outbox: a claimed row's context read in the claim's round trip

The worker read each claimed row's context (the session's state, the end user's CRM id,
the newest record of that end user in that queue; for a summary note, the session's
record and transcript) with a statement of its own, one more round trip between the
claim and the CRM call, on the path of every record (3-5 ms at 1,000 events/s). These
functions are those statements, called by the claim for each row it claims
(outbox_claims.claim_with_context) and alone (records_repo).

VOLATILE: each of their queries takes a fresh snapshot, after the claim took its rows,
so a row's context is as new as the row (a STABLE function, or a join in the claiming
statement, would see the database as of that statement's start, possibly before the
row and its session's state were committed). PL/pgSQL, not SQL: its plans are kept for
the session's connection, as a prepared statement's are; an SQL function's queries are
planned again at every call.

The end user is a subquery by the whole primary key, not a join: as a join, a plan made
while crm_end_users was small read every end user of the account (test_cached_plans).

Revision ID: 0012_outbox
Revises: 0011_outbox
"""
from alembic import op

revision = '0012_outbox'
down_revision = '0011_outbox'
branch_labels = None
depends_on = None

RECORD_CONTEXT = """
CREATE FUNCTION outbox_record_context(p_session_id text, p_crm text, p_account text, p_with_newest boolean)
RETURNS TABLE (state jsonb, contact_id text, record_id text, record_url text, record_session_id text)
LANGUAGE plpgsql VOLATILE ROWS 1
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT s.state,
           (SELECT c.crm_user_id FROM crm_end_users c
            WHERE c.crm_account = p_account AND c.end_user_id = s.state->>'end_user_id'),
           r.record_id, r.record_url, r.session_id
    FROM sessions s
    LEFT JOIN LATERAL (
        SELECT cr.record_id, cr.record_url, cr.session_id FROM crm_records cr
        WHERE p_with_newest AND cr.crm = p_crm AND cr.end_user_id = s.state->>'end_user_id'
          AND cr.queue_id = s.state->>'queue_id'
        ORDER BY cr.id DESC LIMIT 1
    ) r ON true
    WHERE s.session_id = p_session_id;
END
$$
"""

# The session's state and record; while it has none, its record row's status and last
# error (wait for it, or give up with its reason); for a chat with a record, the
# transcript, in the order the messages occurred.
NOTE_CONTEXT = """
CREATE FUNCTION outbox_note_context(p_session_id text)
RETURNS TABLE (state jsonb, record_id text, record_url text, record_row_status text, record_row_error text,
               occurred_at timestamptz[], senders text[], texts text[])
LANGUAGE plpgsql VOLATILE ROWS 1
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT s.state, s.record_id, s.record_url, r.status, r.last_error, t.occurred_at, t.senders, t.texts
    FROM sessions s
    LEFT JOIN LATERAL (
        SELECT o.status, o.last_error FROM outbox o
        WHERE s.record_id IS NULL AND o.session_id = s.session_id AND o.kind = 'record'
        LIMIT 1
    ) r ON true
    LEFT JOIN LATERAL (
        SELECT array_agg(m.occurred_at ORDER BY m.occurred_at, m.event_id) AS occurred_at,
               array_agg(m.sender ORDER BY m.occurred_at, m.event_id) AS senders,
               array_agg(m.text ORDER BY m.occurred_at, m.event_id) AS texts
        FROM session_messages m
        WHERE s.record_id IS NOT NULL AND s.state->>'medium' = 'chat' AND m.session_id = s.session_id
    ) t ON true
    WHERE s.session_id = p_session_id;
END
$$
"""


# The planner's guess for a set-returning function is 1,000 rows: a claim of a handful of
# rows joined to two context functions was costed above jit_above_cost, and every claim
# spent 6 ms compiling itself (JIT) before it ran (make bench: 8.8 ms per claim).
CLAIM_ROWS = "ALTER FUNCTION outbox_claim(integer, double precision) ROWS 16"


def upgrade() -> None:
    op.execute(RECORD_CONTEXT)
    op.execute(NOTE_CONTEXT)
    op.execute(CLAIM_ROWS)


def downgrade() -> None:
    op.execute("ALTER FUNCTION outbox_claim(integer, double precision) ROWS 1000")
    op.execute("DROP FUNCTION outbox_note_context(text)")
    op.execute("DROP FUNCTION outbox_record_context(text, text, text, boolean)")
