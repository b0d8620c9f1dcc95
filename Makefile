# gpudc: `make demo` runs the main job on the local lab; `make test` runs every test.
# Both install what they need on a fresh Debian 12 machine (Python venv + Debian packages).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup system-packages lint test demo bench schema clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Debian packages the lab, the checkers and the browser test need (ci/apt-packages.txt).
system-packages:
	bash scripts/install-system-packages.sh

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

test: setup system-packages lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q -p no:cacheprovider

demo: setup system-packages
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

bench: setup system-packages
	PATH="$(CURDIR)/$(BIN):$$PATH" bash bench/run_all.sh

schema: setup
	$(BIN)/python -m gpudc.model.schema > schema/stack.schema.json

clean:
	rm -rf $(VENV) build src/*.egg-info
