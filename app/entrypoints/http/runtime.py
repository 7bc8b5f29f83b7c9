"""What the HTTP layer sees of the running service."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.crm.base import CrmAdapter
from app.service.auth import TokenBook
from app.service.consumer_health import ConsumerHealth
from app.service.readiness import ComponentCheck, CrmCredentialsCheck, CrmHealth, DatabaseCheck, ReadinessCheck
from app.service.startup import StartupProgress
from app.service.whatif import WhatIf
from app.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    crm: CrmAdapter
    consumer: ConsumerHealth = field(default_factory=lambda: ConsumerHealth(stuck_after_seconds=60))
    startup: StartupProgress = field(default_factory=StartupProgress)
    crm_health: CrmHealth = field(default_factory=CrmHealth)
    tokens: TokenBook | None = None  # built from the settings when not given
    # Conditions /readyz reports beyond the database, the consumer's group and the CRM.
    extra_checks: list[ReadinessCheck] = field(default_factory=list)
    # The what-if the console asks, one per process (its history is shared by the requests and
    # kept warm by the service's background task); built from the engine when not given.
    what_if: WhatIf | None = None

    def __post_init__(self) -> None:
        if self.tokens is None:
            self.tokens = TokenBook.from_settings(self.settings)
        if self.what_if is None:
            self.what_if = WhatIf(self.engine, self.crm.name)

    @property
    def token_book(self) -> TokenBook:
        assert self.tokens is not None
        return self.tokens

    def readiness_checks(self) -> list[ReadinessCheck]:
        # A process checks what it runs (SERVICE_ROLE): a consumer alone calls no CRM, and
        # a worker alone joins no consumer group.
        checks: list[ReadinessCheck] = [DatabaseCheck(self.engine), ComponentCheck("startup", self.startup.readiness)]
        if self.settings.runs_consumer:
            checks.append(
                ComponentCheck("consumer", functools.partial(self.consumer.readiness, self.settings.kafka_group_id))
            )
        if self.settings.runs_worker:
            checks.append(
                CrmCredentialsCheck(self.crm_health, self.crm.name, budget=getattr(self.crm, "rate_budget", None))
            )
        return [*checks, *self.extra_checks]
