# One-command set-up: every target creates the venv and installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: test lint bench dev clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

## make test: unit, functional and end-to-end tests (loopback only)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make lint: ruff and mypy --strict on the functions
lint: $(STAMP)
	$(BIN)/ruff check functions tests devstack benchmarks
	$(BIN)/mypy

## make bench: cold-start and warm-path benchmarks; prints the figures and ratios
bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .aws-sam test-artifacts

## make dev: the whole product on loopback (identity provider, Secrets Manager, Behest stand-in, API)
dev: $(STAMP)
	$(BIN)/python -m devstack $(DEV_ARGS)
