# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run migrate test test-slow lint format docs docs-build bench bench-skeleton bench-turns bench-streams bench-pool clean

$(STAMP): requirements.txt requirements-dev.txt requirements-clients.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-clients.txt
	touch $(STAMP)

## install: create .venv and install pinned dependencies
install: $(STAMP)

## run: apply migrations and serve on http://$(HOST):$(PORT) (WEB_CONCURRENCY=n for n workers)
run: $(STAMP)
	$(BIN)/python -m app

## migrate: apply Alembic migrations to DATABASE_URL
migrate: $(STAMP)
	$(BIN)/python -m app migrate

# Test processes (pytest-xdist). Most tests wait on servers, sockets and timers, so two
# processes on two cores finish well before one; each test file stays on one process, so a
# module's server starts once.
TEST_WORKERS ?= 2

## test: the whole suite on Postgres and SQLite (CI=true turns a missing service into a failure)
test: $(STAMP)
	$(BIN)/pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile

## test-slow: heavy fault and load tests
test-slow: $(STAMP)
	$(BIN)/pytest -m slow

## lint: ruff (lint and format check) and mypy --strict
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## docs: serve the documentation site (docs/) on http://127.0.0.1:8001, rebuilt on every save
docs: $(STAMP)
	$(BIN)/python scripts/export_openapi.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

## docs-build: build the site into site/ with --strict, as CI does: a dead link or anchor fails
docs-build: $(STAMP)
	$(BIN)/python scripts/export_openapi.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## bench: the service's overhead over a fake OpenAI upstream: turns/s, latency, streams, memory (~14 min; BENCH_ARGS="--quick" for ~3 min)
bench: $(STAMP)
	$(BIN)/python bench/overhead.py $(BENCH_ARGS)

## bench-skeleton: the service beside a bare FastAPI + SDK + asyncpg skeleton, same loads (~4 min)
bench-skeleton: $(STAMP)
	$(BIN)/python bench/skeleton.py $(BENCH_SKELETON_ARGS)

## bench-turns: turn throughput and latency with the mock provider (BENCH_TURNS_ARGS="--sqlite" etc.)
bench-turns: $(STAMP)
	$(BIN)/python bench/turns.py $(BENCH_TURNS_ARGS)

## bench-streams: 1000 concurrent SSE streams on one worker (BENCH_STREAMS_ARGS="--redis" etc.)
bench-streams: $(STAMP)
	$(BIN)/python bench/streams.py $(BENCH_STREAMS_ARGS)

## bench-pool: what validating a pooled connection costs per checkout (the service's check vs pool_pre_ping)
bench-pool: $(STAMP)
	$(BIN)/python bench/pool_checkout.py $(BENCH_POOL_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
