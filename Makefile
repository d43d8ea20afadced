# Two commands do all the set-up: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-stamp
TSTAMP  := $(VENV)/.setup-test-stamp
CONFIG  ?= pipelines/configs/default.toml
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup setup-test run test bench mutate lint ui peers clean

setup: $(STAMP)

# Re-install only when the project's dependencies change: a no-op otherwise.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The test suite also exercises the scale-out backends (Spark ALS, Prefect on Dask): their extras
# are installed for `make test` but not needed by `make run`.
setup-test: $(TSTAMP)

$(TSTAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,spark,dask]'
	touch $(TSTAMP)

run: setup
	$(BIN)/recsys run --config $(CONFIG)

test: setup-test
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m benchmarks

# Mutation testing of the losses, samplers, metrics, splits and the training step's loss assembly
# (hours on 2 cores, so niced; incremental on reruns); writes benchmarks/results/mutation.md.
mutate: setup-test
	$(BIN)/python -m pip install --quiet -e '.[dev,mutate]'
	nice -n 10 $(BIN)/python -m benchmarks.mutation

lint: setup
	$(BIN)/ruff check recsys pipelines flows tests benchmarks

ui: setup
	$(BIN)/recsys ui

# Side-by-side with RecBole / Cornac / LensKit / implicit: each peer in its own venv under
# benchmarks/peers/.venv-<peer>/ (never part of `make setup`); regenerates benchmarks/peers/REPORT.md.
peers: setup
	benchmarks/peers/run_all.sh

clean:
	rm -rf $(VENV) build *.egg-info
