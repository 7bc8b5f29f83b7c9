# crm-records: the service image.
#
#   docker build -t crm-records .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=... -e KAFKA_BOOTSTRAP_SERVERS=... -e ADMIN_API_TOKEN=... crm-records
#
# The container applies migrations, then runs the service (`python -m app run`). Other
# commands of the CLI run with the entrypoint replaced, e.g.
#   docker run --rm --entrypoint python crm-records -m app records --limit 5
# See docker-compose.yml for a complete local stack (Kafka, PostgreSQL, the service).

# The base by exact version (Python patch release and Debian release), so a rebuild gets
# the same interpreter and OS until this line is changed on purpose.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# pip and setuptools as Python 3.11's venv ships them (setuptools 65.5) carry published
# advisories: both stages upgrade them (the build's venv, and the base's own copy that
# the runtime image would otherwise still contain).
ARG PIP_MIN=25.3
ARG SETUPTOOLS_MIN=78.1.1

# --- build: the runtime dependencies, in a virtual environment copied as a whole ---------------
FROM ${PYTHON_IMAGE} AS build
ARG PIP_MIN
ARG SETUPTOOLS_MIN

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv \
    && /opt/venv/bin/python -m pip install --upgrade "pip>=${PIP_MIN}" "setuptools>=${SETUPTOOLS_MIN}"
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /build
# Only pyproject.toml first: the dependency layer is rebuilt when the dependencies change,
# not on every code change. Only [project].dependencies are installed: the `dev` and
# `embedded` extras (tests, the embedded broker and PostgreSQL) are not for production.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install -r requirements.txt

# --- runtime ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG PIP_MIN
ARG SETUPTOOLS_MIN

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HTTP_PORT=8080 \
    LOG_FORMAT=json

RUN groupadd --system --gid 10001 crm \
    && useradd --system --uid 10001 --gid crm --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin crm

RUN PIP_NO_CACHE_DIR=1 python -m pip install --upgrade "pip>=${PIP_MIN}" "setuptools>=${SETUPTOOLS_MIN}"

COPY --from=build /opt/venv /opt/venv

# The service finds migrations/ and alembic.ini beside its app/ package, so the code is
# run from /srv/crm-records rather than installed into the virtual environment.
WORKDIR /srv/crm-records
COPY alembic.ini ./
COPY migrations/ ./migrations/
COPY examples/ ./examples/
COPY app/ ./app/
# Compiled once here: the non-root user cannot write beside the code.
RUN python -m compileall -q app migrations

USER crm:crm

EXPOSE 8080

# Liveness only (/healthz): readiness (/readyz) also needs Kafka, PostgreSQL and the CRM,
# which an orchestrator should not restart the container for. No curl in slim: Python asks.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HTTP_PORT', '8080'), timeout=4)" || exit 1

# `run` applies the migrations itself (under an advisory lock), waiting with backoff while
# the database is down instead of exiting; the service is PID 1 and receives SIGTERM directly.
ENTRYPOINT ["python", "-m", "app", "run"]
