# One-command set-up: every target creates the venv and installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: test lint bench dev clean browser

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

## make test: unit, functional and end-to-end tests (loopback only)
test: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The browser test drives Debian's Chromium through chromedriver; installed here when missing.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium and chromium-driver (Debian packages) for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
		echo "note: the browser test needs chromium + chromedriver (Debian: apt-get install chromium chromium-driver)"; \
	fi

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
