"""sessions: pages filled to 70 %, so a state saved again is updated in its own page

Every session's row is saved again at each consumer poll that holds one of its events
(about eight times in its life) and once more by the worker when its record is made.
PostgreSQL updates a row in place (a HOT update: no new entry in the primary key's
index, the old version pruned with its page) only when the row's page has room for the
new version; pages packed full at insert (fillfactor 100, the default) have none, so
every save added an index entry and a page's worth of dead versions for a vacuum to
clear. With three tenths of each page kept free for updates, a state saved again stays in its
page: PostgreSQL's time for saving the states fell by a quarter in batches of 16 events
(docs/bench.md, tenth pass; test_batch_write_cost).

Pages written before this migration keep their packing until rewritten (a VACUUM FULL
or pg_repack, which this migration does not run: it would lock the table).

Revision ID: 0016_sessions
Revises: 0015_consumer
"""
from alembic import op

revision = '0016_sessions'
down_revision = '0015_consumer'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE sessions SET (fillfactor = 70)")


def downgrade() -> None:
    op.execute("ALTER TABLE sessions RESET (fillfactor)")
