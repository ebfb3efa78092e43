# Two commands do everything on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv serve test lint loadtest clean

venv: $(STAMP)

# Rebuilt only when pyproject.toml changes, so `make venv` is a no-op when current.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: venv
	$(BIN)/imcore serve --data-dir ./data

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy imcore tools tests

test: lint
	$(BIN)/pytest

# A server on a temporary data dir, locust headless against it, a summary; reports in
# loadtests/out/. `make loadtest USERS=1000 DURATION=120` for a bigger run.
USERS ?= 200
DURATION ?= 60
loadtest: venv
	$(BIN)/python tools/loadtest.py --users $(USERS) --seconds $(DURATION)

clean:
	rm -rf $(VENV) build *.egg-info
