# Two commands for a fresh machine: `make run` and `make test`.
# Everything else here is a helper they call.

SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
CORES ?= 2

# A working Python >= 3.12: PATH first, then pyenv's versions folder.
# (pyenv's python3.12 shim exists but fails unless the version is selected,
# so each candidate is actually run, not just looked up.)
find_python = $(firstword $(foreach c,python3.14 python3.13 python3.12 python3 \
	$(wildcard $(shell pyenv root 2>/dev/null)/versions/3.1[2-9]*/bin/python3) \
	$(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3),\
	$(shell $(c) -c 'import sys; assert sys.version_info >= (3, 12); print("$(c)")' 2>/dev/null)))

.PHONY: run test lint dryrun env-sync clean-outputs help browser bench r-packages sbc

help:
	@echo "make run   - set up .venv and run the whole workflow on data/raw (reports/index.html)"
	@echo "make test  - set up .venv and run the test suite"

$(VENV)/.installed: requirements.lock pyproject.toml
	@py="$(call find_python)"; \
	if [ -z "$$py" ]; then \
	  echo "ERROR: Python 3.12 or newer is needed (ArviZ 1.x) and none was found on PATH or under pyenv."; \
	  echo "       Install it (e.g. 'pyenv install 3.12' or Debian's python3.12) and run make again."; \
	  exit 1; fi; \
	echo "Creating $(VENV) with $$py"; \
	$$py -m venv $(VENV) && \
	$(BIN)/python -m pip install --quiet --upgrade pip && \
	$(BIN)/python -m pip install --quiet -r requirements.lock && \
	$(BIN)/python -m pip install --quiet --no-deps -e . && \
	touch $@

# A run killed outright leaves Snakemake's lock behind; it is cleared first when no
# Snakemake works in this folder, so that the same command resumes.
run: $(VENV)/.installed
	$(BIN)/python -m allianceflow clear-stale-locks
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --workflow-profile workflow/profiles/default --cores $(CORES)

# Simulation-based calibration of every model family (not part of `make run`; long: see
# README). Writes reports/sbc.html.
sbc: $(VENV)/.installed
	$(BIN)/python -m allianceflow clear-stale-locks
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --workflow-profile workflow/profiles/default --cores $(CORES) sbc

# CORES pytest workers (pytest-xdist), a test module at a time: the test project is built
# once and shared by the workers (tests/conftest.py); the 20 slowest tests listed at the end.
test: $(VENV)/.installed browser
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n $(CORES) \
	  --durations=20

# The report test opens the HTML in headless Chromium (Debian's package). Installed here
# when missing and possible (root with apt); otherwise that one test is skipped and says why.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the report browser test"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends chromium; } >/dev/null 2>&1 \
	      || echo "WARNING: could not install chromium; the browser test will be skipped"; \
	  else \
	    echo "NOTE: chromium is missing and needs root and apt to install;" \
	         "the browser test will be skipped"; \
	  fi; \
	fi

# Benchmarks against reference implementations (not part of the tests): R with brms, rstan,
# metafor and lme4 from Debian's packages, installed here when missing and possible (root
# with apt). Writes bench/RESULTS.md and bench/results.json (see bench/README.md).
# BENCH_ARGS passes options, e.g. make bench BENCH_ARGS="--cases M1 --reps 1".
bench: $(VENV)/.installed r-packages
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run.py $(BENCH_ARGS)

r-packages:
	@if ! Rscript -e 'library(brms); library(rstan); library(metafor); library(lme4)' \
	    >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing R with brms, rstan, metafor and lme4 (Debian packages) for the benchmarks"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends r-base-core r-cran-brms r-cran-rstan r-cran-metafor \
	      r-cran-lme4 libboost-dev >/dev/null; \
	  else \
	    echo "ERROR: the benchmarks need R with brms, rstan, metafor and lme4; as root:" \
	         "apt-get install r-cran-brms r-cran-rstan r-cran-metafor r-cran-lme4 libboost-dev"; \
	    exit 1; \
	  fi; \
	fi

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint

dryrun: $(VENV)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --workflow-profile workflow/profiles/default -n --cores $(CORES)

# Regenerate environment.yml from the lock (a test checks they agree).
env-sync: $(VENV)/.installed
	$(BIN)/python -m allianceflow env-yml requirements.lock > environment.yml
