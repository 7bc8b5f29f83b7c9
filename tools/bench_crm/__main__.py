"""`make bench-crm`: what a record costs against each CRM (issue 11), measured as a contact
center would see it: the service (as replica processes, default settings) against the
project's fake CRMs, every request delayed by `--latency-ms`, each account limited to
`--limit` requests a minute for the burst (the latency phases run on the fake's own plan
limit: Zendesk 700, Kustomer 1000, Freshdesk's announced 200) and refusing beyond it as
the vendor does.

Per CRM it prints: requests per record for new end users (each with a phone, every
other one with an email) and for the same end users returning; p99 from `assigned`
published to `record.created` on the output topic, new / returning; and a burst of
`--burst` new sessions in `--burst-seconds` with 2 replicas: records per minute against
what the limit allows at the measured requests per record, the vendor's refusals, and
anything made or published twice.

Not part of the production package: it runs from a checkout (it uses tests/fakes).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from app.settings import Settings
from tests.factories import event_doc, header
from tests.integration.crm_backends import build_backend
from tools.bench.harness import BenchError, Resources
from tools.bench.phases import percentile

CRMS = ("zendesk", "salesforce", "kustomer", "freshdesk")
# Requests that are not a record's, counted on their own lines: the credential check each
# replica makes every 30 s (it counts against the vendor's limit), and OAuth token requests
# (Salesforce's token endpoint; see docs/crm/salesforce.md on whether they count).
CREDENTIAL_CHECKS = ("/users/me", "/agents/me", "/users/current", "/describe", "/limits")
TOKEN_REQUESTS = ("/oauth2/token",)
NOT_RECORD_WORK = CREDENTIAL_CHECKS + TOKEN_REQUESTS


@dataclass
class Split:
    """Where one phase's p50/p99 went, from the outbox rows' own timestamps (the service's
    clock) and the CRM calls it logged: the part the service adds, apart from the CRM's."""

    to_outbox_ms: list[float] = field(default_factory=list)  # assigned published -> record row written
    to_claim_ms: list[float] = field(default_factory=list)  # row written -> claimed by a worker
    work_ms: list[float] = field(default_factory=list)  # claimed -> row done (CRM calls, budget, bookkeeping)
    crm_ms: list[float] = field(default_factory=list)  # of which: the CRM calls themselves
    to_topic_ms: list[float] = field(default_factory=list)  # row done -> record.created on the topic

    def describe(self) -> str:
        parts = [("to outbox", self.to_outbox_ms), ("to claim", self.to_claim_ms), ("work", self.work_ms),
                 ("of which CRM", self.crm_ms), ("to topic", self.to_topic_ms)]
        return ", ".join(f"{name} {percentile(v, 0.5):.0f}/{percentile(v, 0.99):.0f}" for name, v in parts if v)


@dataclass
class PhaseResult:
    sessions: int
    requests: int
    latencies_ms: list[float]
    split: Split = field(default_factory=Split)
    other: OtherRequests | None = None

    @property
    def per_record(self) -> float:
        return self.requests / self.sessions if self.sessions else float("nan")


@dataclass
class BurstResult:
    sessions: int
    requests: int
    records_per_minute: float
    refusals: int
    duplicate_events: int
    duplicate_records: int


@dataclass
class Outcomes:
    """Every outcome event on the output topic: session id -> [(type, timestamp ms)]."""

    events: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))

    def created(self, session_id: str) -> int | None:
        stamps = [t for kind, t in self.events.get(session_id, []) if kind == "record.created"]
        return min(stamps) if stamps else None


async def follow(bootstrap: str, topic: str, outcomes: Outcomes, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for record in records:
                    event = orjson.loads(record.value)
                    outcomes.events[event["session_id"]].append((event["event_type"], record.timestamp))
    finally:
        await consumer.stop()


def assigned_call(session_id: str, user: int) -> list[dict]:
    session = header(session_id, medium="call", end_user_id=f"eu-{user}", end_user_name=f"Caller {user}",
                     end_user_phone=f"+1555{user:07d}",
                     end_user_email=f"caller{user}@example.com" if user % 2 == 0 else None)
    return [event_doc(session, "queued", 0), event_doc(session, "assigned", 20)]


async def publish_paced(producer: AIOKafkaProducer, topic: str, sessions: list[tuple[str, int]],
                        seconds: float) -> dict[str, int]:
    """Publish each session's events, spread over `seconds`; the assigned event's timestamp (ms)."""
    published: dict[str, int] = {}
    started = time.monotonic()
    for n, (session_id, user) in enumerate(sessions):
        await asyncio.sleep(max(0.0, started + n * seconds / len(sessions) - time.monotonic()))
        queued, assigned = assigned_call(session_id, user)
        await producer.send(topic, key=session_id.encode(), value=orjson.dumps(queued))
        meta = await producer.send_and_wait(topic, key=session_id.encode(), value=orjson.dumps(assigned))
        published[session_id] = meta.timestamp
    return published


async def wait_created(outcomes: Outcomes, sessions: list[str], timeout: float, resources: Resources) -> None:
    deadline = time.monotonic() + timeout
    while any(outcomes.created(s) is None for s in sessions):
        resources.check_alive()
        if time.monotonic() > deadline:
            missing = sum(outcomes.created(s) is None for s in sessions)
            raise BenchError(f"{missing} of {len(sessions)} records not made after {timeout:.0f} s")
        await asyncio.sleep(0.2)


def record_requests(fake, since: int) -> int:
    return sum(1 for r in fake.requests[since:] if not any(p in r.path for p in NOT_RECORD_WORK))


@dataclass
class OtherRequests:
    """The requests of a phase that no record made."""

    checks: int
    tokens: int

    @classmethod
    def since(cls, fake, start: int) -> OtherRequests:
        requests = fake.requests[start:]
        return cls(sum(1 for r in requests if any(p in r.path for p in CREDENTIAL_CHECKS)),
                   sum(1 for r in requests if any(p in r.path for p in TOKEN_REQUESTS)))


async def split(resources: Resources, outcomes: Outcomes, published: dict[str, int]) -> Split:
    """p50/p99 of each leg, from the record rows of these sessions (ms)."""
    import asyncpg

    conn = await asyncpg.connect(resources.url(driver="postgresql"))
    try:
        rows = await conn.fetch(
            """
            SELECT o.session_id, o.created_at, o.claimed_at, o.done_at,
                   (SELECT sum(a.latency_ms) FROM crm_attempts a WHERE a.outbox_id = o.id) AS crm_ms
            FROM outbox o WHERE o.kind = 'record' AND o.session_id = ANY($1::text[])
            """,
            list(published),
        )
    finally:
        await conn.close()
    result = Split()
    for r in rows:
        if r["claimed_at"] is None or r["done_at"] is None:
            continue
        created, claimed, done = (r[k].timestamp() * 1000 for k in ("created_at", "claimed_at", "done_at"))
        result.to_outbox_ms.append(created - published[r["session_id"]])
        result.to_claim_ms.append(claimed - created)
        result.work_ms.append(done - claimed)
        result.crm_ms.append(float(r["crm_ms"] or 0.0))
        topic = outcomes.created(r["session_id"])
        if topic is not None:
            result.to_topic_ms.append(topic - done)
    return result


async def phase(fake, producer, topics, outcomes, resources, sessions, seconds) -> PhaseResult:
    before = len(fake.requests)
    published = await publish_paced(producer, topics["events"], sessions, seconds)
    await wait_created(outcomes, list(published), 120, resources)
    await asyncio.sleep(0.5)
    latencies = [outcomes.created(s) - t for s, t in published.items()]
    return PhaseResult(len(sessions), record_requests(fake, before), latencies,
                       await split(resources, outcomes, published), OtherRequests.since(fake, before))


def refusals(fake, since: int) -> int:
    return sum(1 for r in fake.requests[since:] if r.status == 429 or (r.status == 403 and "sobjects" in r.path))


async def burst(fake, producer, topics, outcomes, resources, backend, args) -> BurstResult:
    before = len(fake.requests)
    sessions = [(f"burst-{n}", 100000 + n) for n in range(args.burst)]
    published = await publish_paced(producer, topics["events"], sessions, args.burst_seconds)
    timeout = 120 + args.burst * 8 * 60 / max(1, args.limit)
    await wait_created(outcomes, list(published), timeout, resources)
    await asyncio.sleep(1.0)
    created = sorted(outcomes.created(s) for s in published)
    minutes = (created[-1] - created[0]) / 60000 if len(created) > 1 else float("nan")
    events = Counter(s for s in published for kind, _ in outcomes.events[s] if kind == "record.created")
    made = Counter(r.session_id for r in await backend.records() if r.session_id in published)
    return BurstResult(
        sessions=len(sessions), requests=record_requests(fake, before),
        records_per_minute=(len(created) - 1) / minutes if minutes else float("nan"),
        refusals=refusals(fake, before),
        duplicate_events=sum(n - 1 for n in events.values() if n > 1),
        duplicate_records=sum(n - 1 for n in made.values() if n > 1),
    )


def limit_fake(fake, crm: str, per_minute: int | None) -> None:
    """The burst's account limit (the latency phases run on the fake's own plan limit)."""
    if per_minute is None or crm == "salesforce":  # a daily allocation, not a per-minute limit
        return
    fake.rate_limit_per_minute = per_minute
    if crm == "zendesk":
        fake.rate_limit_window_seconds = 60.0


async def bench_crm(
    crm: str, args: argparse.Namespace, work_dir: Path
) -> tuple[PhaseResult, PhaseResult, BurstResult, OtherRequests]:
    settings = Settings(_env_file=None)
    resources = Resources(work_dir / crm)
    resources.work_dir.mkdir(parents=True, exist_ok=True)
    backend = build_backend(crm, None)  # type: ignore[arg-type]
    backend.start()
    stop = asyncio.Event()
    try:
        backend.fake.set_faults(delay_seconds=args.latency_ms / 1000)
        await resources.start_broker(settings)
        await resources.create_database(settings)
        suffix = uuid.uuid4().hex[:6]
        topics = {"events": f"events-{suffix}", "dlq": f"dlq-{suffix}", "output": f"records-{suffix}"}
        await resources.create_topics(list(topics.values()))
        crm_env = {key.upper(): str(value) for key, value in backend.settings().items()}
        group = f"bench-crm-{suffix}"
        resources.start_replica(topics, group, crm_env)
        await resources.wait_ready()
        outcomes = Outcomes()
        follower = asyncio.create_task(follow(resources.bootstrap, topics["output"], outcomes, stop))
        producer = AIOKafkaProducer(bootstrap_servers=resources.bootstrap, linger_ms=0, acks=1)
        await producer.start()
        try:
            users = list(range(args.users))
            new = await phase(backend.fake, producer, topics, outcomes, resources,
                              [(f"new-{u}", u) for u in users], args.users / args.rate)
            returning = await phase(backend.fake, producer, topics, outcomes, resources,
                                    [(f"ret-{u}", u) for u in users], args.users / args.rate)
            resources.start_replica(topics, group, crm_env)
            await resources.wait_ready()
            limit_fake(backend.fake, crm, args.limit)
            burst_result = await burst(backend.fake, producer, topics, outcomes, resources, backend, args)
        finally:
            await producer.stop()
            stop.set()
            await follower
        return new, returning, burst_result, OtherRequests.since(backend.fake, 0)
    finally:
        await asyncio.to_thread(resources.cleanup)
        backend.stop()


def others(crm: str, results) -> str:
    """The requests no record made, over the whole run (replicas' start included)."""
    new, returning, total = results[0], results[1], results[3]
    return (f"{total.checks} credential checks and {total.tokens} token requests in the whole run "
            f"(new phase {new.other.checks}/{new.other.tokens}, returning {returning.other.checks}/"
            f"{returning.other.tokens})")


def row(crm: str, new: PhaseResult, returning: PhaseResult, burst_result: BurstResult, limit: int | None) -> str:
    per_record_burst = burst_result.requests / burst_result.sessions
    allowed = f"{limit / per_record_burst:.0f}" if limit and crm != "salesforce" else "no per-minute limit"
    return (
        f"| {crm} | {new.per_record:.2f} | {returning.per_record:.2f} "
        f"| {percentile(new.latencies_ms, 0.99):.0f} ms / {percentile(returning.latencies_ms, 0.99):.0f} ms "
        f"| {burst_result.records_per_minute:.0f} ({per_record_burst:.2f}) | {allowed} "
        f"| {burst_result.refusals} | {burst_result.duplicate_events} / {burst_result.duplicate_records} |"
    )


HEADER = (
    "| CRM | requests per record, new end user | returning end user | p99 `assigned` -> `record.created`, "
    "new / returning | burst, 2 replicas: records per minute (requests per record) | records per minute the limit "
    "allows at that cost | rate-limit answers in the burst | `record.created` twice / CRM record twice |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- |"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="make bench-crm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--crm", default=",".join(CRMS), help="comma list of CRMs (default: all four)")
    parser.add_argument("--latency-ms", type=float, default=120.0, help="added to every CRM request (120)")
    parser.add_argument("--limit", type=int, default=300, help="the account's requests per minute (300)")
    parser.add_argument("--users", type=int, default=60, help="new end users, then the same returning (60)")
    parser.add_argument("--rate", type=float, default=2.0, help="sessions per second in those phases (2)")
    parser.add_argument("--burst", type=int, default=300, help="new sessions in the burst (300)")
    parser.add_argument("--burst-seconds", type=float, default=30.0, help="over this many seconds (30)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    crms = [c.strip() for c in args.crm.split(",") if c.strip()]
    print(f"bench-crm: latency {args.latency_ms:.0f} ms per request, limit {args.limit} requests per minute, "
          f"{args.users} new then returning end users at {args.rate:g}/s, "
          f"burst {args.burst} in {args.burst_seconds:g} s",
          flush=True)
    # SIGTERM (e.g. `timeout`) ends the run like Ctrl-C: the running CRM's bench cancels and
    # takes down its replicas, broker, database and fake before the process exits.
    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return run_all(crms, args)
    except KeyboardInterrupt:
        print("bench-crm interrupted; cleaned up", file=sys.stderr, flush=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_all(crms: list[str], args: argparse.Namespace) -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-crm-") as work:
        for crm in crms:
            started = time.monotonic()
            try:
                results = asyncio.run(bench_crm(crm, args, Path(work)))
            except BenchError as exc:
                print(f"{crm}: bench failed: {exc}", file=sys.stderr, flush=True)
                return 1
            rows.append(row(crm, *results[:3], args.limit))
            new, returning = results[0], results[1]
            print(f"{crm}: done in {time.monotonic() - started:.0f} s\n{rows[-1]}\n"
                  f"  p50/p99 ms, new: {new.split.describe()}\n"
                  f"  p50/p99 ms, returning: {returning.split.describe()}\n"
                  f"  not counted above: {others(crm, results)}", flush=True)
    print("\n" + HEADER + "\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
