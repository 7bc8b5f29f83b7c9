"""console: the what-if's replay inputs (one compact row per session), each event's type
and time for the session timeline, and one heartbeat row per replica for the operations view

Revision ID: 0007_console
Revises: 0006_perf
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = '0007_console'
down_revision = '0006_perf'
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'whatif_inputs',
        sa.Column('session_id', sa.Text, primary_key=True),
        sa.Column('created_at', TS, nullable=False),
        sa.Column('source_updated_at', TS, nullable=False),
        sa.Column('first_event_at', TS, nullable=False),
        sa.Column('end_user_id', sa.Text, nullable=False),
        sa.Column('queue_id', sa.Text, nullable=False),
        sa.Column('is_chat', sa.Boolean, nullable=False),
        sa.Column('agent_id', sa.Text),
        sa.Column('agent_name', sa.Text),
        sa.Column('moments', ARRAY(TS), nullable=False),
        sa.Column('end_user_message_times', ARRAY(TS), nullable=False),
        sa.Column('record', sa.Text, nullable=False),
        sa.Column('record_action', sa.Text),
        sa.Column('record_reason', sa.Text),
        sa.Column('last_wait_reason', sa.Text),
    )
    op.create_index('ix_whatif_inputs_source_updated_at', 'whatif_inputs', ['source_updated_at'])
    op.create_index('ix_whatif_inputs_created_at', 'whatif_inputs', ['created_at'])
    op.add_column('processed_events', sa.Column('event_type', sa.Text))
    op.add_column('processed_events', sa.Column('occurred_at', TS))
    op.create_index('ix_processed_events_session', 'processed_events', ['session_id'])
    op.create_table(
        'replica_heartbeats',
        sa.Column('replica_id', sa.Text, primary_key=True),
        sa.Column('seen_at', TS, nullable=False, server_default=sa.func.now()),
        sa.Column('consumer_lag', JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column('dead_letters', JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column('crm_health', JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    )


def downgrade() -> None:
    op.drop_table('replica_heartbeats')
    op.drop_index('ix_processed_events_session', 'processed_events')
    op.drop_column('processed_events', 'occurred_at')
    op.drop_column('processed_events', 'event_type')
    op.drop_table('whatif_inputs')
