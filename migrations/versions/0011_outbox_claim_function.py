"""outbox: the claim as one function, so a claim is one round trip and holds the claim
lock only while PostgreSQL runs it, not across the client's round trips

Claims run one at a time across replicas (the claim lock), and each must take its
snapshot after the lock is granted: so far that was BEGIN with the lock, the claim, and
COMMIT, three round trips with the lock held across two of them, and across whatever
kept the claiming process from answering (a busy event loop). A VOLATILE PL/pgSQL
function takes a fresh snapshot for each statement it runs, so the lock and the claim
can be one call; outside a transaction the lock ends with that call.

The claim itself is unchanged (see app/adapters/db/outbox_repo.py). The planner
settings the claim needs last for the call only (the function's SET clauses).

Revision ID: 0011_outbox
Revises: 0010_outbox
"""
from alembic import op

revision = '0011_outbox'
down_revision = '0010_outbox'
branch_labels = None
depends_on = None

CLAIM_LOCK_KEY = 0x6F7574626F78  # "outbox": the key outbox_repo.CLAIM_LOCK_KEY names

CREATE = f"""
CREATE FUNCTION outbox_claim(claim_limit integer, lease_seconds double precision)
RETURNS SETOF outbox
LANGUAGE plpgsql VOLATILE
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({CLAIM_LOCK_KEY});
    RETURN QUERY
    WITH candidates AS (
        SELECT o.id FROM outbox o
        WHERE ((o.status = 'pending' AND o.due_at <= now())
               OR (o.status = 'in_progress' AND o.lease_until < now()))
          AND (o.serial_key IS NULL OR (
                o.id = (
                    SELECT min(p.id) FROM outbox p
                    WHERE p.serial_key = o.serial_key AND p.status IN ('pending', 'in_progress'))
                AND NOT EXISTS (
                    SELECT 1 FROM outbox r
                    WHERE r.serial_key = o.serial_key AND r.id <> o.id
                      AND r.status = 'in_progress' AND r.lease_until >= now())))
        ORDER BY o.priority, o.due_at, o.id
        LIMIT claim_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE outbox SET status = 'in_progress', attempts = outbox.attempts + 1,
                      lease_until = now() + make_interval(secs => lease_seconds), updated_at = now(),
                      claimed_at = clock_timestamp(), claim_id = gen_random_uuid(),
                      -- a row still in progress was abandoned mid-flight: its outcome is unknown
                      outcome_unknown = outbox.outcome_unknown OR outbox.status = 'in_progress'
    FROM candidates WHERE outbox.id = candidates.id
    RETURNING outbox.*;
END
$$
"""


def upgrade() -> None:
    op.execute(CREATE)


def downgrade() -> None:
    op.execute("DROP FUNCTION outbox_claim(integer, double precision)")
