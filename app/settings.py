"""The process's configuration: one pydantic-settings object, built once at start
and passed to whatever needs it. Nothing else reads the environment.

Each CRM's own fields (ZENDESK_*, SALESFORCE_*, ...) are defined in its package and come
in through CrmSettings (app/adapters/crm/registry.py), as do the values CRM_PROVIDER
accepts: adding a CRM does not change this file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.adapters.crm.registry import CRMS, CrmProvider, CrmSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Where `make run` keeps the embedded PostgreSQL's data between runs.
EMBEDDED_DATA_DIR = PROJECT_ROOT / ".data"
EMBEDDED_BROKER_PORT = 9092


class _Head(BaseModel):
    """The fields that come before the CRMs' parts. pydantic orders a model's fields base
    class first, and that order is the order of a refusal's errors and of the input it
    shows (part of the contract): these, then every CRM's part, then Settings' own."""

    # Kafka. None means "start an embedded broker" (only `make run`, tools/dev, does that;
    # the CLI's publish then talks to it at EMBEDDED_BROKER_PORT).
    kafka_bootstrap_servers: str | None = None
    kafka_topic: str = "ccai.session-events"
    kafka_output_topic: str = "ccai.crm-record-events"
    kafka_dlq_topic: str = "ccai.session-events.dlq"
    kafka_group_id: str = "crm-records"
    kafka_topic_partitions: int = Field(default=6, ge=1)
    kafka_max_poll_records: int = Field(default=2000, ge=1)
    # How long the broker may hold a fetch while waiting for data: short, so a quiet
    # topic's next event is picked up quickly.
    kafka_fetch_max_wait_ms: int = Field(default=50, ge=1)
    # A replica that dies is noticed after this long; joining a group also takes about
    # half of it on some brokers, so keep it modest.
    kafka_session_timeout_ms: int = Field(default=10000, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(default=2000, ge=100)
    # The largest dead letter sent as a copy; None: what the broker reports for the
    # dead-letter topic (max.message.bytes), or 16 MiB when it reports nothing.
    kafka_max_message_bytes: int | None = Field(default=None, ge=1024)
    # A partition whose batch has failed (or run) this long shows as stuck on /readyz.
    consumer_stuck_partition_seconds: float = Field(default=60.0, gt=0)
    # SIGTERM: stop fetching, finish or release in-flight work, commit, exit within this.
    shutdown_timeout_seconds: float = Field(default=25.0, gt=0)

    # PostgreSQL. None means "start an embedded PostgreSQL" (only `make run`, tools/dev,
    # does that; the CLI then reads that one, see resolved_database_url).
    database_url: str | None = None
    # Connections kept open, plus up to 8 more in bursts. Sized for OUTBOX_CONCURRENCY and
    # the consumer, so a busy replica rarely opens new ones (each is a server process).
    database_pool_size: int = Field(default=32, ge=1)

    crm_provider: CrmProvider = "sandbox"


# Bases: pydantic-settings' reading of the environment and .env first; then, in reverse
# order of their fields, every CRM's part (CrmSettings) and _Head.
class Settings(BaseSettings, CrmSettings, _Head):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    crm_timeout_seconds: float = Field(default=10.0, gt=0)

    # What this process runs besides its HTTP endpoints: `all` (the consumer and the outbox
    # worker), or one of them, for a consumer Deployment and a worker Deployment of the
    # same image. Apart, neither waits for the other on a shared event loop.
    service_role: Literal["all", "consumer", "worker"] = "all"

    # One admin token (named "admin"); ADMIN_API_TOKENS / ADMIN_API_TOKENS_FILE add named
    # tokens with roles (`name:token:role`, see app/service/auth.py).
    admin_api_token: SecretStr | None = None
    admin_api_tokens: SecretStr | None = None
    admin_api_tokens_file: Path | None = None
    http_port: int = 8080
    http_host: str = "0.0.0.0"
    # HTTP limits (app/entrypoints/http/limits.py): open connections beyond the cap are
    # refused; a request's headers, then its body, must each arrive within the read timeout.
    http_max_connections: int = Field(default=256, ge=1)
    http_read_timeout_seconds: float = Field(default=10.0, gt=0)
    http_keepalive_timeout_seconds: int = Field(default=5, ge=1)
    http_max_body_bytes: int = Field(default=65536, ge=1024)

    # Outbox worker.
    # Rows carried out at once. Each mostly waits (on the CRM, on commits), so more rows in
    # flight drain a burst sooner; a CRM's request budget still caps the request rate.
    outbox_concurrency: int = Field(default=32, ge=1)
    outbox_claim_batch: int = Field(default=64, ge=1)
    # A claimed row whose worker vanished is claimable again after this long.
    outbox_lease_seconds: float = Field(default=60.0, gt=0)
    outbox_max_attempts: int = Field(default=12, ge=1)
    outbox_backoff_base_seconds: float = Field(default=1.0, gt=0)
    outbox_backoff_max_seconds: float = Field(default=300.0, gt=0)
    outbox_poll_seconds: float = Field(default=1.0, gt=0)

    # How often the database-derived gauges of /metrics are refreshed (never per scrape).
    metrics_refresh_seconds: float = Field(default=5.0, gt=0)

    # Load the what-if's 7-day history in the background after a start and keep it in memory,
    # so that an administrator's first what-if finds it ready (docs/bench-whatif.md: about
    # 1 KiB of memory per session in the window, 100 MiB for 100,000).
    whatif_keep_warm: bool = True
    # ...unless the window holds more sessions than this: memory stays bounded (~1 KiB each).
    whatif_keep_warm_max_sessions: int = Field(default=200_000, ge=0)

    log_level: str = "INFO"
    # json: one JSON object per line (the container's default); text: readable. Unset:
    # text on a terminal, json otherwise.
    log_format: Literal["json", "text"] | None = None
    # Traces are exported with OTLP when this is set (the other OTEL_* variables tune the
    # exporter); unset, tracing is off and costs nothing.
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "crm-records"

    @property
    def runs_consumer(self) -> bool:
        return self.service_role in ("all", "consumer")

    @property
    def runs_worker(self) -> bool:
        return self.service_role in ("all", "worker")

    def embedded_database_dir(self) -> Path:
        return EMBEDDED_DATA_DIR / "pg"

    def resolved_database_url(self) -> str:
        """The database to use; the embedded one's socket address when none is set."""
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"postgresql+asyncpg://postgres@/postgres?host={self.embedded_database_dir()}"

    def resolved_bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{EMBEDDED_BROKER_PORT}"

    def crm_requests_per_minute(self) -> int | None:
        """The configured ceiling of the CRM's request rate; None: follow what the vendor
        announces on every answer (its rate-limit headers)."""
        spec = CRMS.get(self.crm_provider)
        field = spec.ceiling_setting if spec is not None else None
        return getattr(self, field) if field else None


def normalize_database_url(url: str) -> str:
    """Accept the plain `postgresql://` form operators often paste, and use asyncpg."""
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    return url
