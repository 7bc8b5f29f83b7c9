"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-24 11:33:40.066168
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('crm_contacts',
    sa.Column('crm', sa.Text(), nullable=False),
    sa.Column('end_user_id', sa.Text(), nullable=False),
    sa.Column('contact_id', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('crm', 'end_user_id')
    )
    op.create_table('crm_records',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('crm', sa.Text(), nullable=False),
    sa.Column('record_id', sa.Text(), nullable=False),
    sa.Column('record_url', sa.Text(), nullable=True),
    sa.Column('end_user_id', sa.Text(), nullable=False),
    sa.Column('queue_id', sa.Text(), nullable=False),
    sa.Column('session_id', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('crm', 'record_id', name='uq_crm_records_record')
    )
    op.create_index('ix_crm_records_owner', 'crm_records', ['crm', 'end_user_id', 'queue_id', 'id'], unique=False)
    op.create_table('decisions',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('session_id', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('event_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('settings_version', sa.Integer(), nullable=True),
    sa.Column('record_id', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_decisions_session', 'decisions', ['session_id', 'id'], unique=False)
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('idempotency_key', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('session_id', sa.Text(), nullable=False),
    sa.Column('serial_key', sa.Text(), nullable=True),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('status', sa.Text(), server_default='pending', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idempotency_key')
    )
    op.create_index('ix_outbox_due', 'outbox', ['due_at', 'id'], unique=False, postgresql_where=sa.text("status IN ('pending', 'in_progress')"))
    op.create_index('ix_outbox_serial', 'outbox', ['serial_key', 'id'], unique=False, postgresql_where=sa.text("status IN ('pending', 'in_progress')"))
    op.create_index('ix_outbox_session', 'outbox', ['session_id'], unique=False)
    op.create_table('processed_events',
    sa.Column('event_id', sa.Text(), nullable=False),
    sa.Column('session_id', sa.Text(), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('event_id')
    )
    op.create_table('sandbox_contacts',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('external_id', sa.Text(), nullable=True),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('phone', sa.Text(), nullable=True),
    sa.Column('email', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('external_id')
    )
    op.create_index('ix_sandbox_contacts_email', 'sandbox_contacts', ['email'], unique=False)
    op.create_index('ix_sandbox_contacts_phone', 'sandbox_contacts', ['phone'], unique=False)
    op.create_table('session_messages',
    sa.Column('session_id', sa.Text(), nullable=False),
    sa.Column('event_id', sa.Text(), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sender', sa.Text(), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('session_id', 'event_id')
    )
    op.create_table('sessions',
    sa.Column('session_id', sa.Text(), nullable=False),
    sa.Column('state', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('record', sa.Text(), server_default='pending', nullable=False),
    sa.Column('crm', sa.Text(), nullable=True),
    sa.Column('record_id', sa.Text(), nullable=True),
    sa.Column('record_url', sa.Text(), nullable=True),
    sa.Column('record_action', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('session_id')
    )
    op.create_table('settings_versions',
    sa.Column('version', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('document', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('changes', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('actor', sa.Text(), nullable=True),
    sa.Column('saved_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('version')
    )
    op.create_table('crm_attempts',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('outbox_id', sa.BigInteger(), nullable=False),
    sa.Column('session_id', sa.Text(), nullable=False),
    sa.Column('crm', sa.Text(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('operation', sa.Text(), nullable=False),
    sa.Column('method', sa.Text(), nullable=True),
    sa.Column('path', sa.Text(), nullable=True),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['outbox_id'], ['outbox.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_crm_attempts_session', 'crm_attempts', ['session_id', 'id'], unique=False)
    op.create_table('sandbox_records',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('external_id', sa.Text(), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('contact_id', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.Text(), server_default='open', nullable=False),
    sa.Column('tags', postgresql.ARRAY(sa.Text()), server_default='{}', nullable=False),
    sa.Column('medium', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['contact_id'], ['sandbox_contacts.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('external_id')
    )
    op.create_table('sandbox_notes',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('record_id', sa.BigInteger(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('private', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['record_id'], ['sandbox_records.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_sandbox_notes_record', 'sandbox_notes', ['record_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_sandbox_notes_record', table_name='sandbox_notes')
    op.drop_table('sandbox_notes')
    op.drop_table('sandbox_records')
    op.drop_index('ix_crm_attempts_session', table_name='crm_attempts')
    op.drop_table('crm_attempts')
    op.drop_table('settings_versions')
    op.drop_table('sessions')
    op.drop_table('session_messages')
    op.drop_index('ix_sandbox_contacts_phone', table_name='sandbox_contacts')
    op.drop_index('ix_sandbox_contacts_email', table_name='sandbox_contacts')
    op.drop_table('sandbox_contacts')
    op.drop_table('processed_events')
    op.drop_index('ix_outbox_session', table_name='outbox')
    op.drop_index('ix_outbox_serial', table_name='outbox', postgresql_where=sa.text("status IN ('pending', 'in_progress')"))
    op.drop_index('ix_outbox_due', table_name='outbox', postgresql_where=sa.text("status IN ('pending', 'in_progress')"))
    op.drop_table('outbox')
    op.drop_index('ix_decisions_session', table_name='decisions')
    op.drop_table('decisions')
    op.drop_index('ix_crm_records_owner', table_name='crm_records')
    op.drop_table('crm_records')
    op.drop_table('crm_contacts')
