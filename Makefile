# Two commands do all the set-up: `make run` and `make test`.
PY      ?= python3
, := ,
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-stamp
TSTAMP  := $(VENV)/.setup-test-stamp
CONFIG  ?= pipelines/configs/default.toml
export PATH := $(abspath $(BIN)):$(PATH)

STACK_DIR ?= .stack
STACK_ARGS ?=
SSTAMP  := $(VENV)/.setup-stack-stamp

.PHONY: setup setup-test system-test-deps run test bench mutate lint ui stack stack-stop peers clean

setup: $(STAMP)

# Re-install only when the project's dependencies change: a no-op otherwise.
$(STAMP): pyproject.toml
	$(call venv_install,dev)
	touch $(STAMP)

# $(call venv_install,EXTRAS): the venv (made, and its pip upgraded, only where it is missing), then the
# project with EXTRAS in one pip install.
define venv_install
test -x $(BIN)/python || { $(PY) -m venv $(VENV) && $(BIN)/python -m pip install --quiet --upgrade pip; }
$(BIN)/python -m pip install --quiet -e '.[$(1)]'
endef

# The test suite also exercises the scale-out backends (Spark ALS, Prefect on Dask) and the team
# stack (MLflow and Prefect servers on PostgreSQL, the MLflow UI in headless Chromium): their extras
# and system packages are installed for `make test` but not needed by `make run`.
setup-test: $(TSTAMP) system-test-deps

# One pip install of every extra the tests need, `.[dev]`'s too: on a fresh clone `make test` resolved
# and installed the project twice in a row (`.[dev]` for $(STAMP), then this). It also stands for
# $(STAMP) (touched when missing or older than pyproject.toml), so a later `make run` installs nothing.
$(TSTAMP): pyproject.toml
	$(call venv_install,dev$(,)spark$(,)dask$(,)postgres)
	test $(STAMP) -nt pyproject.toml || touch $(STAMP)
	touch $(TSTAMP)

# PostgreSQL's server programs and Chromium from the system's packages (apt-get), only when missing.
# A machine that cannot install them (no apt-get, no root or sudo, no network) still runs the suite:
# the tests that need them skip, saying why, and the summary counts the PostgreSQL-backed ones.
system-test-deps:
	@$(call need_packages,$(PG_PACKAGE) $(CHROMIUM_PACKAGE),warn)

PG_PACKAGE       = $(if $(wildcard /usr/lib/postgresql/*/bin/initdb)$(shell command -v pg_ctl),,postgresql)
CHROMIUM_PACKAGE = $(if $(shell command -v chromium || command -v chromium-browser),,chromium)
# $(call need_packages,PACKAGES[,warn]): apt-get install the missing PACKAGES; when that is not
# possible, stop with exit code 2, or with `warn` say which tests will skip and go on.
define need_packages
missing="$(strip $(1))"; \
if [ -n "$$missing" ]; then \
  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
  echo "installing system packages: $$missing"; \
  if ! command -v apt-get >/dev/null; then why="no apt-get here"; \
  elif [ -n "$$sudo" ] && ! command -v sudo >/dev/null; then why="not root and no sudo"; \
  elif ! { $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; }; then \
    why="apt-get failed"; fi; \
  if [ -n "$$why" ]; then \
    if [ "$(2)" = warn ]; then \
      echo "warning: could not install $$missing ($$why): the tests that need them will be skipped"; \
    else echo "error: install $$missing with your system's package manager ($$why)"; exit 2; fi; \
  fi; \
fi
endef

run: setup
	$(BIN)/recsys run --config $(CONFIG)

test: setup-test
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m benchmarks

# Mutation testing of the losses, samplers, metrics, splits and the training step's loss assembly
# (~25 min on a quiet 2-core machine, hours on a busy one, so niced; incremental on reruns); writes
# benchmarks/results/mutation.md.
mutate: setup-test
	$(BIN)/python -m pip install --quiet -e '.[dev,mutate]'
	nice -n 10 $(BIN)/python -m benchmarks.mutation

lint: setup
	$(BIN)/ruff check recsys pipelines flows tests benchmarks

ui: setup
	$(BIN)/recsys ui

# The team stack on this machine: PostgreSQL + MLflow server + Prefect server (README "Running it as
# a team"); data, logs and state in $(STACK_DIR)/.
stack: $(SSTAMP)
	@$(call need_packages,$(PG_PACKAGE))
	$(BIN)/recsys stack up --dir $(STACK_DIR) $(STACK_ARGS)

stack-stop:
	$(BIN)/recsys stack down --dir $(STACK_DIR)

$(SSTAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	touch $(SSTAMP)

# Side-by-side with RecBole / Cornac / LensKit / implicit: each peer in its own venv under
# benchmarks/peers/.venv-<peer>/ (never part of `make setup`); regenerates benchmarks/peers/REPORT.md.
peers: setup
	benchmarks/peers/run_all.sh

clean:
	rm -rf $(VENV) build *.egg-info
