"""What /readyz answers, as JSON: each check's own facts beside ready/detail/degraded (the
consumer's stuck partitions, the CRM and its rate budget), and nothing more."""

from __future__ import annotations

from aiokafka import TopicPartition

from app.adapters.crm.budget import RateBudget
from app.entrypoints.http.routes.health import readiness_body, readiness_view
from app.service.consumer_health import ConsumerHealth
from app.service.readiness import ComponentCheck, CrmCredentialsCheck, CrmHealth, readiness
from app.service.startup import StartupProgress


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_stuck_partition_and_the_crm_quota_as_readyz_shows_them():
    clock = Clock()
    consumer = ConsumerHealth(stuck_after_seconds=60, clock=clock, joined=True)
    consumer.assigned([TopicPartition("events", 2)])
    consumer.failed(TopicPartition("events", 2), 4812, "SQLSTATE 57P03")
    clock.now += 61.27
    budget = RateBudget("zendesk", "zendesk:acme", ceiling_per_minute=300, clock=clock)
    checks = [
        ComponentCheck("startup", StartupProgress(waiting_for=None).readiness),
        ComponentCheck("consumer", lambda: consumer.readiness("g1")),
        CrmCredentialsCheck(CrmHealth(ok=False, detail="401 from /users/me"), "zendesk", budget=budget),
    ]
    body = readiness_body(readiness_view(await readiness(checks)))
    assert body == {
        "status": "not ready",
        "not_ready": ["consumer", "crm"],
        "checks": {
            "startup": {"ready": True},
            "consumer": {
                "ready": False,
                "degraded": True,
                "detail": "partition 2 of events at offset 4812 has not advanced for 61 s: SQLSTATE 57P03",
                "stuck_partitions": [
                    {"topic": "events", "partition": 2, "offset": 4812, "seconds": 61.3, "error": "SQLSTATE 57P03"}
                ],
            },
            "crm": {
                "ready": False,
                "detail": "401 from /users/me",
                "crm": "zendesk",
                "quota": {
                    "crm": "zendesk", "account": "zendesk:acme", "per_minute": 300.0, "ceiling_per_minute": 300,
                    "vendor_limit": None, "vendor_remaining": None, "window_seconds": 60.0, "usable_remaining": None,
                    "paused_for_seconds": 0.0,
                },
            },
        },
    }


async def test_a_ready_crm_check_still_names_the_crm():
    body = readiness_body(readiness_view(await readiness([CrmCredentialsCheck(CrmHealth(ok=True), "sandbox")])))
    assert body == {"status": "ready", "not_ready": [], "checks": {"crm": {"ready": True, "crm": "sandbox"}}}
