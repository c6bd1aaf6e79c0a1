# The two commands a newcomer runs are `make demo` and `make test`; both install what
# they need first (a virtual environment, and the database servers through apt-get).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.replpool-installed
PYTEST_ARGS ?=

CHECK_STAMP := $(VENV)/.replpool-check-installed

.PHONY: test check demo lab venv servers bench clean

test: venv servers
	$(PY) -m pytest $(PYTEST_ARGS)

# Lint (ruff, settings in ruff.toml) and type-check (mypy, settings in setup.cfg).
check: venv $(CHECK_STAMP)
	$(PY) -m ruff check replpool tests benchmarks scripts examples
	$(PY) -m mypy

$(CHECK_STAMP): setup.cfg setup.py $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[check]'
	@touch $@

demo: venv servers
	$(PY) -m replpool demo

lab: venv servers
	$(PY) -m replpool lab up --engine postgresql --replicas 2

bench: venv servers
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/overhead_mariadb.py
	$(PY) benchmarks/async_overhead.py
	$(PY) benchmarks/django_views.py
	$(PY) benchmarks/offload.py
	$(PY) benchmarks/sql_classify.py
	$(PY) benchmarks/freshness.py
	$(PY) benchmarks/django_workload.py
	$(PY) benchmarks/monitor_cost.py
	$(PY) benchmarks/sharding.py

venv: $(STAMP)

$(STAMP): setup.cfg setup.py
	@bash scripts/ensure-python.sh "$(PYTHON)" "$(VENV)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

servers: venv
	$(PY) -m replpool lab install-servers

clean:
	rm -rf $(VENV) *.egg-info build dist .hypothesis
