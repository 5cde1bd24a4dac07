# Dev and CI entry points (GNU make). `make` alone lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SERVICES := scripts/services.sh

# Where tests/demo/benchmarks find Kafka and Redis. ?= keeps values the user set.
# Deliberately NOT exported to every recipe: scripts/services.sh treats both being
# set as "use external services, start nothing", so it must only ever see values
# the user really set. They are passed explicitly to the commands that need them.
KAFKA_BOOTSTRAP_SERVERS ?= 127.0.0.1:$(or $(CHURN_KAFKA_PORT),9092)
REDIS_URL ?= redis://127.0.0.1:$(or $(CHURN_REDIS_PORT),6379)/0
REDIS_CLUSTER_URL ?= redis://127.0.0.1:$(or $(CHURN_REDIS_CLUSTER_PORT),7001)/0
WITH_SERVICES = KAFKA_BOOTSTRAP_SERVERS='$(KAFKA_BOOTSTRAP_SERVERS)' REDIS_URL='$(REDIS_URL)' \
	REDIS_CLUSTER_URL='$(REDIS_CLUSTER_URL)'

# The local broker's SASL_SSL listener, for tests/integration/test_kafka_security.py.
# Recursively expanded, so read when `make test` runs pytest, after `services` wrote
# them. The password travels as a file name: make echoes its command lines.
SASL_STATE := .services/kafka/sasl
KAFKA_SASL_BOOTSTRAP_SERVERS ?= $(shell cat $(SASL_STATE)/address 2>/dev/null)
KAFKA_SASL_USERNAME ?= $(shell cat $(SASL_STATE)/user 2>/dev/null)
KAFKA_SASL_PASSWORD_FILE ?= $(CURDIR)/$(SASL_STATE)/password
KAFKA_SASL_CA_FILE ?= $(CURDIR)/.services/certs/ca.pem
KAFKA_SASL_CERT_FILE ?= $(CURDIR)/.services/certs/client.pem
KAFKA_SASL_KEY_FILE ?= $(CURDIR)/.services/certs/client.key
WITH_SASL = KAFKA_SASL_BOOTSTRAP_SERVERS='$(KAFKA_SASL_BOOTSTRAP_SERVERS)' \
	KAFKA_SASL_USERNAME='$(KAFKA_SASL_USERNAME)' KAFKA_SASL_PASSWORD_FILE='$(KAFKA_SASL_PASSWORD_FILE)' \
	KAFKA_SASL_CA_FILE='$(KAFKA_SASL_CA_FILE)' KAFKA_SASL_CERT_FILE='$(KAFKA_SASL_CERT_FILE)' \
	KAFKA_SASL_KEY_FILE='$(KAFKA_SASL_KEY_FILE)'

PYTEST_ARGS ?=

# Python packages that mypy checks. $(wildcard) drops any not created yet: mypy given a
# missing directory fails with a confusing 'Duplicate module named "__main__"'.
PACKAGES := $(wildcard stream_app feature_store scoring training schemas simulator bench)

.PHONY: help venv lock services services-down services-status tools lint test fuzz demo bench-features bench bench-memory clean

help: ## list targets
	@echo "Targets:"
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "Variables: PYTEST_ARGS, KAFKA_BOOTSTRAP_SERVERS, REDIS_URL, CHURN_KAFKA_PORT, CHURN_REDIS_PORT"

venv: $(VENV)/.installed ## create .venv from the lock files in requirements/

# Installs exactly what the lock files pin, every file checked against its sha256:
# uv first (itself locked), then `uv pip sync` of the whole dependency tree, dev tools
# and the xgboost extra included (so its tests always run here and in CI), then the
# project itself, editable. Re-runs when a lock file changes.
$(VENV)/.installed: requirements/requirements-dev.txt requirements/requirements-uv.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "python3.11 (or python3) not found" >&2; exit 1; }
	@echo "==> $(VENV): $$($(PYTHON) --version) from $(PYTHON)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/requirements-uv.txt
	$(BIN)/uv pip sync --quiet --python $(BIN)/python --require-hashes requirements/requirements-dev.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

COMPILE = $(BIN)/uv pip compile --universal --python-version 3.11 --generate-hashes --quiet

lock: ## refresh the lock files in requirements/ to the newest versions pyproject.toml allows
	@test -x $(BIN)/uv || { echo "run 'make venv' first (it installs uv)" >&2; exit 1; }
	$(COMPILE) --upgrade pyproject.toml --extra dev --extra xgboost -o requirements/requirements-dev.txt
	$(COMPILE) pyproject.toml -c requirements/requirements-dev.txt -o requirements/requirements-runtime.txt
	$(COMPILE) pyproject.toml --extra xgboost -c requirements/requirements-dev.txt -o requirements/requirements-xgboost.txt
	sed -n 's/^\(uv==[^ ]*\).*/\1/p' requirements/requirements-dev.txt | $(COMPILE) - -o requirements/requirements-uv.txt

services: ## start local Kafka + Redis (scripts/services.sh up)
	$(SERVICES) up

services-down: ## stop them
	$(SERVICES) down

services-status: ## show whether they run
	$(SERVICES) status

tools: ## install prometheus, promtool, chromium and chromedriver when missing (the alert rule and work-list page tests need them)
	$(SERVICES) tools

lint: venv ## ruff check, ruff format --check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(PACKAGES)

test: venv lint services tools ## lint, then pytest against the local services (PYTEST_ARGS=...)
	$(WITH_SERVICES) $(WITH_SASL) $(BIN)/pytest $(PYTEST_ARGS)

test-engines: venv services tools ## the long fault runs on the confluent engine that make test leaves out
	$(WITH_SERVICES) $(WITH_SASL) $(BIN)/pytest -m engine_matrix $(PYTEST_ARGS)

fuzz: venv services ## the live-worker fuzz test at 100,000 hostile inputs (make test runs 10,000)
	$(WITH_SERVICES) CHURN_FUZZ_INPUTS=$${CHURN_FUZZ_INPUTS:-100000} \
		$(BIN)/pytest -s tests/integration/test_hostile_input.py

demo: venv services ## run the end-to-end demo
	$(WITH_SERVICES) $(BIN)/python -m stream_app.demo

bench-features: venv services ## feature store benchmark
	$(WITH_SERVICES) $(BIN)/python -m bench.features

bench: venv services ## the stream benchmark, the drift monitor's cost (bench/drift.py), the decoder's (bench/decoder.py)
	$(WITH_SERVICES) $(BIN)/python -m bench.stream
	$(WITH_SERVICES) $(BIN)/python -m bench.drift
	$(BIN)/python -m bench.decoder

bench-memory: venv services ## the one worker's RSS over a long backlog (BENCH_MEMORY_EVENTS, default 5M): bench/memory.json
	$(WITH_SERVICES) $(BIN)/python -m bench.stream --memory-only --events $${BENCH_MEMORY_EVENTS:-5000000} --out bench/memory.json

clean: ## stop services, delete .venv and .services (the Kafka jar cache in ~/.cache stays)
	$(SERVICES) reset
	rm -rf $(VENV) .services
