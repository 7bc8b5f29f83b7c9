"""The sandbox CRM's settings (SANDBOX_*), one part of the service's Settings
(app/settings.py composes every CRM's part through the registry). A module of its own,
not in sandbox.py, so that composing Settings imports none of the sandbox's database code."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SandboxSettings(BaseModel):
    # The sandbox CRM's simulated answer time, for trying crash and load behaviour.
    sandbox_latency_ms: int = Field(default=0, ge=0)
