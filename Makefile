# Two commands do all the set-up: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-stamp
CONFIG  ?= pipelines/configs/default.toml
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup run test bench lint ui clean

setup: $(STAMP)

# Re-install only when the project's dependencies change: a no-op otherwise.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: setup
	$(BIN)/recsys run --config $(CONFIG)

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m benchmarks

lint: setup
	$(BIN)/ruff check recsys pipelines flows tests benchmarks

ui: setup
	$(BIN)/recsys ui

clean:
	rm -rf $(VENV) build *.egg-info
