# The two commands of the README. Each creates .venv and installs driftpilot into it when needed.
#   make run    - `driftpilot demo`: the whole loop in about two minutes on the embedded default (SQLite event store,
#                 local SQLite MLflow store in .driftpilot/demo): bootstrap, daemon, drifting traffic, retrain, gate
#   make test   - run the test suite and the packages' docstring examples (needs PostgreSQL on 127.0.0.1:5432, database
#                 `test`, trust auth)
#   make daemon - bootstrap the example model from Elec2 (first time), then run the daemon (API + decision loop)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
POLICY ?= config/example-classification.yaml
# The Elec2 stream bootstraps the example model on the first `make daemon` (skipped when the file is absent).
DATA ?= ../shared/data/ELEC.arff.zip
# Elec2 is half-hourly from 1996-05-07: bootstrap on its older half (event times reconstructed) and keep the newer
# half back as traffic to replay (rows 22656..45311). Empty BOOTSTRAP_ARGS bootstraps on the whole file.
BOOTSTRAP_ARGS ?= --holdback 0.5 --time-start 1996-05-07 --time-step 30min
HOST ?= 127.0.0.1
PORT ?= 8080
PYTEST_ARGS ?=

.PHONY: run daemon test install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

run: install
	$(VENV)/bin/driftpilot --log-level WARNING demo

daemon: install
	@if [ -n "$(DATA)" ] && [ -f "$(DATA)" ]; then \
	  $(VENV)/bin/driftpilot --log-level WARNING bootstrap --config $(POLICY) --data $(DATA) $(BOOTSTRAP_ARGS) \
	    --if-missing; \
	  holdback=$$(echo " $(BOOTSTRAP_ARGS) " | sed -n 's/.* --holdback[ =]\([^ ]*\) .*/\1/p'); \
	  if [ -n "$$holdback" ] && [ "$$holdback" != "0" ]; then \
	    echo "to replay the rows the bootstrap held back (--holdback $$holdback) as live traffic, from another shell:"; \
	    echo "  $(VENV)/bin/driftpilot replay --config $(POLICY) --input $(DATA) --holdback $$holdback --url http://$(HOST):$(PORT) --rate 50"; \
	  fi; \
	else echo "no bootstrap data ($(DATA)): serving without a champion (see driftpilot bootstrap --help)"; fi
	$(VENV)/bin/driftpilot run --config $(POLICY) --host $(HOST) --port $(PORT)

# Four workers: the slowest tests wait on real subprocesses (daemons, servers), so they overlap well even on 2 cores.
# PYTEST_ARGS="-n 0 ..." runs serially.
test: install
	$(PY) -m pytest -n 4 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .driftpilot *.egg-info
