# Everything sets itself up: `make run` and `make test` work on a fresh clone.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-crm chaos backlog bench-whatif catalogs screenshots install lint clean

$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) is required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.3' 'setuptools>=78.1.1'  # the venv's own carry advisories
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The service on embedded defaults: an embedded broker unless KAFKA_BOOTSTRAP_SERVERS is
# set, an embedded PostgreSQL (data in .data/pg) unless DATABASE_URL is set.
run: $(STAMP)
	$(BIN)/python -m tools.dev

# Uses PostgreSQL at 127.0.0.1:5432 (or TEST_DATABASE_URL) and starts its own broker
# unless KAFKA_BOOTSTRAP_SERVERS is set.
test: $(STAMP)
	$(BIN)/python -m pytest -q -rs $(PYTEST_ARGS)

# The lint and type gate (config in pyproject.toml), and the size gate (tools/check_size.py:
# no module in app/ over 400 lines, no function over 60); .ci/run runs it before the tests.
lint: $(STAMP)
	$(BIN)/ruff check app tools tests
	$(BIN)/mypy app
	$(BIN)/python -m tools.check_size

bench: $(STAMP)
	$(BIN)/python -m tools.bench $(BENCH_ARGS)

# What a record costs per CRM against the fakes (120 ms per request, 300 requests a
# minute): requests per record, p99 to record.created, a 2-replica burst (docs/bench.md).
bench-crm: $(STAMP)
	$(BIN)/python -m tools.bench_crm $(BENCH_CRM_ARGS)

# The what-if preview over 100,000 synthetic sessions (its own database; see docs/bench.md).
bench-whatif: $(STAMP)
	$(BIN)/python tools/bench_whatif.py --sessions $${SESSIONS:-100000}

# The README's console screenshots, taken by the browser tests (needs Chromium).
screenshots: $(STAMP)
	CONSOLE_SCREENSHOTS=docs/console REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q tests/browser

# The console's translations: extract the strings, merge them into each catalog, compile.
# The compiled .mo files are committed, so `make run`, the tests and the image need no step.
catalogs: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k N_ -k _ -k ngettext:1,2 --no-location --sort-output \
		--project "crm-records console" -o app/console/locale/messages.pot .
	$(BIN)/pybabel update -i app/console/locale/messages.pot -d app/console/locale -D messages --width 100
	$(BIN)/pybabel compile -d app/console/locale -D messages --statistics

# The fault-injection proof (docs/bench.md, README "Reliability"): the sandbox, then the
# Zendesk fake. CHAOS_SEED=<seed> replays a run; CHAOS_ARGS="--crm zendesk" picks one CRM.
chaos: $(STAMP)
	$(BIN)/python -m tools.chaos run $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) $(CHAOS_ARGS)

# 1,000,000 events published while the service is stopped, then worked off.
backlog: $(STAMP)
	$(BIN)/python -m tools.chaos backlog $(BACKLOG_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
