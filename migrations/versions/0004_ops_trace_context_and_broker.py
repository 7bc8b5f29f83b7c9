"""ops: the trace context of the event that made an outbox row, and the identity of
the Kafka cluster each consumer group last read from

Revision ID: 0004_ops
Revises: 0003_http_actor_note
"""
from alembic import op
import sqlalchemy as sa

revision = '0004_ops'
down_revision = '0003_http_actor_note'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A W3C traceparent: the CRM call made later, perhaps by another replica, joins the
    # event's trace.
    op.add_column('outbox', sa.Column('trace_context', sa.Text(), nullable=True))
    op.create_table(
        'kafka_clusters',
        sa.Column('group_id', sa.Text(), primary_key=True),
        sa.Column('cluster_id', sa.Text(), nullable=False),
        sa.Column('bootstrap_servers', sa.Text(), nullable=False),
        sa.Column('first_seen_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('previous_cluster_id', sa.Text(), nullable=True),
        sa.Column('changed_at', sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table('kafka_clusters')
    op.drop_column('outbox', 'trace_context')
