# Every target bootstraps .venv from pyproject.toml itself: on a fresh machine `make demo` and
# `make test` are all a newcomer types.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# napari and Qt (the [view] extra) live in an environment of their own: they take about two
# minutes to install, which every CI run would pay for tests that only `make test-view` runs.
VIEW_VENV := .venv-view
VIEW_STAMP := $(VIEW_VENV)/.installed
# Prefect state stays inside the project and never phones home.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_LOGGING_LEVEL ?= WARNING

.PHONY: demo test test-view bench lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "PyAMA Flow needs Python >= 3.11 (set PYTHON=python3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing pyama-flow into $(VENV) (first time takes about a minute)..."
	@$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]' > $(VENV)/install.log 2>&1 \
		|| { grep -v '^WARNING: Location' $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m flows.demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

$(VIEW_STAMP): pyproject.toml
	@test -x $(VIEW_VENV)/bin/python || $(PYTHON) -m venv $(VIEW_VENV)
	@echo "installing pyama-flow[view] into $(VIEW_VENV) (napari and Qt: about two minutes)..."
	@$(VIEW_VENV)/bin/python -m pip install --disable-pip-version-check -q -e '.[dev,view]' \
		> $(VIEW_VENV)/install.log 2>&1 \
		|| { grep -v '^WARNING: Location' $(VIEW_VENV)/install.log; exit 1; }
	@touch $(VIEW_STAMP)

# napari's layers, napari-ome-zarr and a screenshot rendered on Xvfb (apt install xvfb)
test-view: $(VIEW_STAMP)
	$(VIEW_VENV)/bin/python -m pytest -q -m view -W ignore::DeprecationWarning tests/test_view.py

bench: $(STAMP)
	$(PY) benchmarks/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) $(VIEW_VENV) .prefect .demo .pytest_cache .ruff_cache
