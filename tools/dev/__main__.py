"""`make run` (`python -m tools.dev`): the service with whatever is not configured started
here: an embedded PostgreSQL (data in .data/pg) unless DATABASE_URL is set, an embedded
broker unless KAFKA_BOOTSTRAP_SERVERS is set; the CRM is the settings' (sandbox unless
CRM_PROVIDER says otherwise)."""

from __future__ import annotations

import sys

from app.entrypoints.service import configure_logging, run_service, run_until_complete
from app.settings import EMBEDDED_BROKER_PORT, Settings
from tools.dev.banner import dev_banner
from tools.dev.embedded import EmbeddedBroker, EmbeddedPostgres


def main() -> int:
    settings = Settings()
    configure_logging(settings)
    started: list[EmbeddedPostgres | EmbeddedBroker] = []
    try:
        if not settings.database_url:
            started.append(EmbeddedPostgres(settings.embedded_database_dir()).start())
        if not settings.kafka_bootstrap_servers:
            settings.embedded_database_dir().parent.mkdir(parents=True, exist_ok=True)
            broker = EmbeddedBroker(EMBEDDED_BROKER_PORT, settings.embedded_database_dir().parent / "broker.log")
            started.append(broker.start())
            settings = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers})
        print(dev_banner(settings, embedded_broker=any(isinstance(p, EmbeddedBroker) for p in started),
                         embedded_database=any(isinstance(p, EmbeddedPostgres) for p in started),
                         data_dir=".data"), file=sys.stderr, flush=True)
        run_until_complete(run_service(settings))
    except KeyboardInterrupt:
        pass
    finally:
        for part in reversed(started):
            part.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
