"""The service's tables, as SQLAlchemy Core. Migrations (migrations/) create them: a change
here needs a migration too. In app/, only the modules of this package query them;
services and adapters call its repositories."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = MetaData()

# The outbox's claim order, derived from the row's kind (migration 0002 uses the same text).
PRIORITY_BY_KIND = "CASE WHEN kind = 'ended_note' THEN 1 ELSE 0 END"

Timestamp = DateTime(timezone=True)

# One row per event id ever applied: the guard that makes redelivery a no-op.
processed_events = Table(
    "processed_events",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("session_id", Text, nullable=False),
    Column("first_seen_at", Timestamp, nullable=False, server_default=func.now()),
    # What the event was and when it occurred: the console's session timeline lists them all.
    Column("event_type", Text),
    Column("occurred_at", Timestamp),
    Index("ix_processed_events_session", "session_id"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", Text, primary_key=True),
    Column("state", JSONB, nullable=False),  # app.domain.session.SessionState.to_document()
    # app.domain.session.RecordProgress: pending | due | skipped
    Column("record", Text, nullable=False, server_default="pending"),
    Column("crm", Text),
    Column("record_id", Text),
    Column("record_url", Text),
    Column("record_action", Text),  # created | attached | reopened
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    Column("updated_at", Timestamp, nullable=False, server_default=func.now()),
    # Moves with every state the consumer saves (migration 0013): its batch's write checks it.
    Column("state_version", BigInteger, nullable=False, server_default="0"),
    # Room in each page for a state saved again in place (migration 0016).
    postgresql_with={"fillfactor": 70},
)

# Chat transcripts, one row per message event (kept apart so the session row stays small).
session_messages = Table(
    "session_messages",
    metadata,
    Column("session_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("occurred_at", Timestamp, nullable=False),
    Column("sender", Text, nullable=False),
    Column("text", Text),
    PrimaryKeyConstraint("session_id", "event_id"),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("session_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("event_at", Timestamp),
    Column("settings_version", Integer),
    Column("record_id", Text),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    Index("ix_decisions_session", "session_id", "id"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),  # record | ended_note | publish
    Column("session_id", Text, nullable=False),
    # Rows sharing a serial key run one at a time, oldest first: two sessions of one end
    # user in one leaf queue never decide "create" side by side.
    Column("serial_key", Text),
    # Claimed lowest first: an end-of-session note can wait, a due record should not.
    Column("priority", SmallInteger, Computed(PRIORITY_BY_KIND, persisted=True), nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),  # pending | in_progress | done | parked
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("due_at", Timestamp, nullable=False, server_default=func.now()),
    Column("lease_until", Timestamp),
    Column("last_error", Text),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    Column("updated_at", Timestamp, nullable=False, server_default=func.now()),
    Column("done_at", Timestamp),
    # The last claim: created_at -> claimed_at is the wait for a worker, claimed_at ->
    # done_at the work (the bench splits its latency so).
    Column("claimed_at", Timestamp),
    # Set by each claim: only the current claimer may finish the row (a claimer whose
    # lease ran out finds its bookkeeping refused and publishes nothing).
    Column("claim_id", UUID(as_uuid=False)),
    # An earlier attempt may have done the work without hearing back: look before writing.
    Column("outcome_unknown", Boolean, nullable=False, server_default=text("false")),
    # W3C traceparent of the work that made the row: the CRM call joins that trace.
    Column("trace_context", Text),
    Index(
        "ix_outbox_due",
        "priority",
        "due_at",
        "id",
        postgresql_where=text("status IN ('pending', 'in_progress')"),
    ),
    Index(
        "ix_outbox_serial",
        "serial_key",
        "id",
        postgresql_where=text("status IN ('pending', 'in_progress')"),
    ),
    # The claim's "is another row of this key being carried out" check: few rows.
    Index("ix_outbox_serial_running", "serial_key", postgresql_where=text("status = 'in_progress'")),
    # Counting the backlog reads the parked rows from here, the open ones from ix_outbox_due.
    Index("ix_outbox_parked", "id", postgresql_where=text("status = 'parked'")),
    Index("ix_outbox_session", "session_id"),
)

crm_attempts = Table(
    "crm_attempts",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("outbox_id", BigInteger, ForeignKey("outbox.id", ondelete="CASCADE"), nullable=False),
    Column("session_id", Text, nullable=False),
    Column("crm", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("operation", Text, nullable=False),
    Column("method", Text),
    Column("path", Text),
    Column("status_code", Integer),
    Column("latency_ms", Float),
    Column("error", Text),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    Index("ix_crm_attempts_session", "session_id", "id"),
)

# Every record this service made, for "the newest record of this end user in this leaf queue".
crm_records = Table(
    "crm_records",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("crm", Text, nullable=False),
    Column("record_id", Text, nullable=False),
    Column("record_url", Text),
    Column("end_user_id", Text, nullable=False),
    Column("queue_id", Text, nullable=False),
    Column("session_id", Text, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    UniqueConstraint("crm", "record_id", name="uq_crm_records_record"),
    Index("ix_crm_records_owner", "crm", "end_user_id", "queue_id", "id"),
)

# The CRM's id for each end user, per CRM account, so a returning end user costs no
# look-up; forgotten when the CRM says that user is gone (deleted or merged).
crm_end_users = Table(
    "crm_end_users",
    metadata,
    Column("crm_account", Text, nullable=False),
    Column("end_user_id", Text, nullable=False),
    Column("crm_user_id", Text, nullable=False),
    Column("updated_at", Timestamp, nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("crm_account", "end_user_id"),
)

# One request schedule per CRM account, shared by every replica (app.adapters.crm.budget's
# RateBudget, stored through rate_budget_repo).
crm_rate_budgets = Table(
    "crm_rate_budgets",
    metadata,
    Column("account", Text, primary_key=True),
    Column("next_slot", Timestamp, nullable=False, server_default=func.now()),
    Column("per_minute", Float),
    Column("paused_until", Timestamp),
    Column("updated_at", Timestamp, nullable=False, server_default=func.now()),
)

# The access token of a CRM that hands out expiring tokens (Salesforce's OAuth token), one
# per CRM account, shared by every replica: one token request serves them all, also across
# restarts, until the CRM refuses the token (app.adapters.db.crm_tokens_repo).
crm_tokens = Table(
    "crm_tokens",
    metadata,
    Column("account", Text, primary_key=True),
    Column("access_token", Text, nullable=False),
    Column("instance_url", Text, nullable=False),
    Column("updated_at", Timestamp, nullable=False, server_default=func.now()),
)

settings_versions = Table(
    "settings_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=True),
    Column("document", JSONB, nullable=False),
    Column("changes", JSONB, nullable=False),
    Column("actor", Text),
    Column("actor_note", Text),
    Column("saved_at", Timestamp, nullable=False, server_default=func.now()),
)

# --- the sandbox CRM: a CRM kept in this database, for trying the service out ---------------

sandbox_contacts = Table(
    "sandbox_contacts",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("external_id", Text, unique=True),
    Column("name", Text),
    Column("phone", Text),
    Column("email", Text),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    Index("ix_sandbox_contacts_phone", "phone"),
    Index("ix_sandbox_contacts_email", "email"),
)

sandbox_records = Table(
    "sandbox_records",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("external_id", Text, nullable=False, unique=True),  # the session that made it
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("contact_id", BigInteger, ForeignKey("sandbox_contacts.id"), nullable=False),
    Column("status", Text, nullable=False, server_default="open"),  # open | pending | solved | closed
    Column("tags", ARRAY(Text), nullable=False, server_default="{}"),
    Column("medium", Text),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    Column("updated_at", Timestamp, nullable=False, server_default=func.now()),
    Column("closed_at", Timestamp),
)

sandbox_notes = Table(
    "sandbox_notes",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("record_id", BigInteger, ForeignKey("sandbox_records.id"), nullable=False),
    Column("body", Text, nullable=False),
    Column("private", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    # Set for end-of-session notes (the outbox row's key): a retried write adds nothing.
    Column("idempotency_key", Text),
    Index("ix_sandbox_notes_record", "record_id", "id"),
    UniqueConstraint("idempotency_key", name="uq_sandbox_notes_idempotency_key"),
)

# The Kafka cluster each consumer group last read from: a new cluster (an embedded
# broker restarted empty, a migrated Kafka) has no committed offsets and new offsets for
# the same topics; the service notices and says so instead of trusting either.
kafka_clusters = Table(
    "kafka_clusters",
    metadata,
    Column("group_id", Text, primary_key=True),
    Column("cluster_id", Text, nullable=False),
    Column("bootstrap_servers", Text, nullable=False),
    Column("first_seen_at", Timestamp, nullable=False, server_default=func.now()),
    Column("last_seen_at", Timestamp, nullable=False, server_default=func.now()),
    Column("previous_cluster_id", Text),
    Column("changed_at", Timestamp),
)

# What the what-if replays, one compact row per session (app/adapters/db/history_repo.py):
# derived from `sessions` and `session_messages`, brought up to date before each read.
whatif_inputs = Table(
    "whatif_inputs",
    metadata,
    Column("session_id", Text, primary_key=True),
    Column("created_at", Timestamp, nullable=False),
    Column("source_updated_at", Timestamp, nullable=False),  # the session row's updated_at it was made from
    Column("first_event_at", Timestamp, nullable=False),
    Column("end_user_id", Text, nullable=False),
    Column("queue_id", Text, nullable=False),
    Column("is_chat", Boolean, nullable=False),
    Column("agent_id", Text),
    Column("agent_name", Text),
    Column("moments", ARRAY(Timestamp), nullable=False),  # queued, assigned, connected, abandoned, ended
    Column("end_user_message_times", ARRAY(Timestamp), nullable=False),
    Column("record", Text, nullable=False),
    Column("record_action", Text),
    Column("record_reason", Text),
    Column("last_wait_reason", Text),
    Index("ix_whatif_inputs_source_updated_at", "source_updated_at"),
    Index("ix_whatif_inputs_created_at", "created_at"),
)

# One row per running replica, written every few seconds: its partitions' consumer lag, its
# dead-letter counts and its CRM health, so the operations view shows every replica.
replica_heartbeats = Table(
    "replica_heartbeats",
    metadata,
    Column("replica_id", Text, primary_key=True),
    Column("seen_at", Timestamp, nullable=False, server_default=func.now()),
    Column("consumer_lag", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("dead_letters", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("crm_health", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
)
