"""What `make run` prints before the service starts: where things are, and what the
embedded broker does not keep."""

from __future__ import annotations

from app.settings import Settings


def dev_banner(settings: Settings, *, embedded_broker: bool, embedded_database: bool, data_dir: str) -> str:
    port = settings.http_port
    lines = [
        "",
        "crm-records (make run)",
        f"  HTTP        http://localhost:{port}  /healthz /readyz /metrics, /api/* with a bearer token",
        f"  CRM         {settings.crm_provider}",
    ]
    if embedded_database:
        lines.append(f"  PostgreSQL  embedded, data kept in {data_dir}/pg across runs")
    else:
        lines.append("  PostgreSQL  DATABASE_URL")
    if embedded_broker:
        lines += [
            f"  Kafka       embedded Tansu broker at {settings.resolved_bootstrap_servers()}, IN MEMORY ONLY:",
            "              every make run starts with empty topics and no committed offsets, and",
            "              anything published while make run is stopped is lost. Events applied",
            "              before are remembered in PostgreSQL by event id: publishing them again",
            "              makes no second record. The new broker is logged as a new cluster.",
            "  Publish     .venv/bin/python -m app publish examples/*.jsonl   (or any aiokafka producer)",
            "              librdkafka clients (kcat, confluent-kafka) cannot talk to this broker.",
            "  Durable     docker compose up -d kafka, then",
            "              KAFKA_BOOTSTRAP_SERVERS=localhost:9094 make run",
        ]
    else:
        lines.append(f"  Kafka       {settings.resolved_bootstrap_servers()}")
    lines.append("")
    return "\n".join(lines)
