"""Two replicas in one consumer group, append on: two sessions of the same end user in
the same leaf queue, decided at the same moment, end as one record and one attach."""

from __future__ import annotations

import collections

from sqlalchemy import select

from app.adapters.db.schema import sandbox_records, sessions
from tests.factories import event_doc, header
from tests.helpers import eventually, run_in_process
from tests.integration.kafka_helpers import publish
from tools.dev.embedded import free_port


def assigned_call(session_id: str, end_user: str) -> list[dict]:
    session = header(session_id, medium="call", end_user_id=end_user, queue_id="q-shared",
                     end_user_phone=f"+1555{abs(hash(end_user)) % 10**7:07d}")
    return [event_doc(session, "queued", 0), event_doc(session, "assigned", 5)]


async def test_two_replicas_never_make_two_records_for_one_end_user_and_queue(
    clean_db, make_settings, kafka_bootstrap, topics
):
    first = make_settings(sandbox_latency_ms=50)
    second = first.model_copy(update={"http_port": free_port()})
    async with run_in_process(first) as one, run_in_process(second):
        async with one.client() as client:
            response = await client.put("/api/settings", json={"append_to_open_record_in_leaf_queue": True})
            assert response.status_code == 200
        users = [f"eu-race-{n}" for n in range(30)]
        documents = []
        for user in users:
            # Two sessions per end user, different keys, so usually different partitions
            # and often different replicas; interleaved so both are due together.
            a, b = assigned_call(f"{user}-a", user), assigned_call(f"{user}-b", user)
            documents += [a[0], b[0], a[1], b[1]]
        await publish(kafka_bootstrap, topics.events, documents)

        async def all_decided():
            async with clean_db.connect() as conn:
                rows = (await conn.execute(select(sessions.c.session_id, sessions.c.record_action)
                                           .where(sessions.c.record_action.is_not(None)))).all()
            return rows if len(rows) == 2 * len(users) else None

        rows = await eventually(all_decided, timeout=40)

    async with clean_db.connect() as conn:
        records = (await conn.execute(select(sandbox_records.c.id, sandbox_records.c.external_id))).all()
    assert len(records) == len(users)
    actions = collections.defaultdict(list)
    for session_id, action in rows:
        actions[session_id.rsplit("-", 1)[0]].append(action)
    assert all(sorted(a) == ["attached", "created"] for a in actions.values()), actions
