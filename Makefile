# The README's commands. Every step installs what it needs and is skipped when nothing changed.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check -q
STAMP_PY := $(VENV)/.installed
STAMP_NPM := node_modules/.installed
STAMP_MODELS := build/models/.built
STAMP_BUILD := $(VENV)/.build-installed
VENV_CI := .venv-ci
STAMP_CI := $(VENV_CI)/.installed
VENV_IAC := .venv-iac
STAMP_IAC := $(VENV_IAC)/.installed
STAMP_OCI := .aiaas/.docker-registry-installed
DOCKER_REGISTRY_VERSION := 2.8.2+ds1-1
STAMP_CHROMIUM := .aiaas/.chromium-installed
CHROMIUM_VERSION := 156.0.8078.114-1~deb12u1

.PHONY: help deps models demo test test-unit test-integration test-e2e up lint typecheck bench clean

help:
	@echo "make demo   - set up everything, run sample jobs end to end on a throwaway local stack"
	@echo "make test   - set up everything and run the whole test suite"
	@echo "make up     - the local platform in the foreground (Ctrl-C stops it)"
	@echo "make lint typecheck bench clean"

$(STAMP_PY): requirements.txt requirements-dev.txt constraints.txt pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -c constraints.txt -r requirements-dev.txt
	$(PIP) install --no-deps -e .
	touch $@

$(STAMP_NPM): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

deps: $(STAMP_PY) $(STAMP_NPM)

# Build-only dependencies (torch, sentence-transformers...), installed only when a model package must be (re)built:
# torch alone first so that pip takes the CPU wheel instead of resolving a multi-GB CUDA build.
$(STAMP_BUILD): requirements-build.txt constraints.txt $(STAMP_PY)
	$(PIP) install -c constraints.txt $$(grep -E '^torch==' requirements-build.txt)
	$(PIP) install -c constraints.txt -r requirements-build.txt
	touch $@

# Each builder skips a package whose buildKey (sources, library versions, parameters) is unchanged.
$(STAMP_MODELS): $(STAMP_PY) $(wildcard shared/modelbuild/*.py shared/modelbuild/data/*) \
		shared/inference/handlers_image.py shared/inference/handlers_text.py shared/domain/drift.py
	$(MAKE) --no-print-directory $(STAMP_BUILD)
	$(BIN)/python -m shared.modelbuild --out build/models --samples build/samples
	touch $@

models: $(STAMP_MODELS)

demo: deps models
	$(BIN)/aiaas demo

up: deps models
	$(BIN)/aiaas up

# The end-to-end tests mostly wait on the local stack (jobs, retries, browsers); the unit and integration tests
# mostly compute. Run side by side they share the 2 cores instead of taking turns (about 15 min in a row, 11 side
# by side); each half's output is printed whole, and make test fails if either half failed.
test: deps models lint typecheck $(STAMP_CI) $(STAMP_IAC) $(STAMP_OCI) $(STAMP_CHROMIUM)
	@log=$$(mktemp); \
	$(BIN)/pytest -q -p no:cacheprovider tests/unit tests/integration > $$log 2>&1 & fast=$$!; \
	e2e=0; $(BIN)/pytest -q -p no:cacheprovider tests/e2e || e2e=$$?; \
	rest=0; wait $$fast || rest=$$?; \
	echo "--- tests/unit and tests/integration ---"; cat $$log; rm -f $$log; \
	echo "e2e exit $$e2e, unit+integration exit $$rest"; test $$e2e -eq 0 && test $$rest -eq 0

test-unit: deps models $(STAMP_IAC)
	$(BIN)/pytest -q tests/unit

test-integration: deps models $(STAMP_OCI)
	$(BIN)/pytest -q tests/integration

test-e2e: deps models $(STAMP_CHROMIUM)
	$(BIN)/pytest -q tests/e2e

lint: $(STAMP_PY)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP_PY)
	$(BIN)/mypy

clean:
	rm -rf build .aiaas .pytest_cache .mypy_cache .ruff_cache

# The bench's peer (Ray Data) lives in its own venv: ray pulls pandas and pyarrow, which the main venv (what Azure
# Functions installs, what the tests run on) must not get. BENCH_SKIP_RAY=1 skips installing it too.
VENV_BENCH := .venv-bench
STAMP_BENCH := $(VENV_BENCH)/.installed

$(STAMP_BENCH): requirements-bench.txt
	test -x $(VENV_BENCH)/bin/python || $(PY) -m venv $(VENV_BENCH)
	$(VENV_BENCH)/bin/pip --disable-pip-version-check -q install -r requirements-bench.txt
	touch $@

bench: deps models $(if $(filter-out 0,$(BENCH_SKIP_RAY)),,$(STAMP_BENCH))
	$(BIN)/python bench/run.py
	$(BIN)/python bench/logicapps_latency.py
	$(BIN)/python bench/drift_fpr.py

# The workflow checks (check-jsonschema, zizmor; tests/unit/test_delivery.py) live in their own venv: their
# dependencies (ruamel.yaml, jsonschema, requests) must not move the main venv's pins.
$(STAMP_CI): requirements-ci.txt
	test -x $(VENV_CI)/bin/python || $(PY) -m venv $(VENV_CI)
	$(VENV_CI)/bin/pip --disable-pip-version-check -q install -r requirements-ci.txt
	touch $@

# The offline Bicep checks (tree-sitter Bicep grammar, checkov) live in their own venv too: checkov pulls packages
# the main venv must not get. tests/unit/test_bicep_*.py run them as subprocesses.
$(STAMP_IAC): requirements-iac.txt
	test -x $(VENV_IAC)/bin/python || $(PY) -m venv $(VENV_IAC)
	$(VENV_IAC)/bin/pip --disable-pip-version-check -q install -r requirements-iac.txt
	touch $@

# The CNCF distribution registry (Debian's docker-registry) that tests/integration/test_oci_registry.py starts as the
# local stand-in for Azure Container Registry (never as a service: the package's own unit stays stopped). Installed,
# at the pinned version, only when no docker-registry is installed: a machine that has one already keeps it.
$(STAMP_OCI):
	@mkdir -p $(dir $@)
	if ! dpkg-query -W -f='$${Status}' docker-registry 2>/dev/null | grep -q 'install ok installed'; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			docker-registry=$(DOCKER_REGISTRY_VERSION); \
	fi
	test -x /usr/bin/docker-registry
	touch $@

# Debian's Chromium, which tests/e2e/test_console.py drives with Playwright (executable_path=/usr/bin/chromium: no
# browser download). Installed at the pinned version only when no chromium is installed; a machine that has one keeps it.
$(STAMP_CHROMIUM):
	@mkdir -p $(dir $@)
	if ! dpkg-query -W -f='$${Status}' chromium 2>/dev/null | grep -q 'install ok installed'; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			chromium=$(CHROMIUM_VERSION); \
	fi
	test -x /usr/bin/chromium
	touch $@
