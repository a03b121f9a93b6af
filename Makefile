# keel: `make demo` runs the whole pipeline on a year of real data; `make test` runs the test suite;
# `make test-fast` leaves out the tests marked slow (end to end: Prefect flows and servers, the pipeline on
# real data, keel run in subprocesses) and takes a couple of minutes; `make lint` runs ruff, the import-linter
# contracts and mypy over keel.core.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: demo test test-fast install lint bench clean

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "keel needs Python 3.11 (python3.11 not found)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_FLAGS) --upgrade pip
	$(PIP) install $(PIP_FLAGS) -e .
	@# a migrated Prefect database for fresh homes to start from (saves Prefect's migrations on first start)
	$(BIN)/python -c "from keel.flows.prefect_db import build; build()" \
		|| echo "keel: no Prefect database template; Prefect will migrate on first start"
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(PIP) install $(PIP_FLAGS) -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/keel demo

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.test-installed
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(VENV)/.test-installed
	$(BIN)/ruff check core flows tui cli keel tests bench scripts
	$(BIN)/python scripts/lint.py imports
	$(BIN)/python scripts/lint.py types

bench: $(VENV)/.installed
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf $(VENV) .keel .pytest_cache
