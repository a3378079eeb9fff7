# Every target bootstraps .venv from pyproject.toml itself: on a fresh machine `make demo` and
# `make test` are all a newcomer types.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Prefect state stays inside the project and never phones home.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_LOGGING_LEVEL ?= WARNING

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "PyAMA Flow needs Python >= 3.11 (set PYTHON=python3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing pyama-flow into $(VENV) (first time takes about three minutes)..."
	@$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]' > $(VENV)/install.log 2>&1 \
		|| { grep -v '^WARNING: Location' $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pyama demo

# Two workers, each taking whole files: module fixtures such as the deployments' server are
# started once, in one process.
# The cases marked long (services and clusters of real processes, minutes each) run with the
# benchmarks, so that make test stays a few minutes.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not long"

bench: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m long
	$(PY) benchmarks/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .prefect .demo .pytest_cache .ruff_cache
