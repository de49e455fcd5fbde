# One-command set-up: every target creates the venv and installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: test lint bench dev clean browser integration node-clients

$(STAMP): requirements.txt requirements-dev.txt requirements-instructor.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	# instructor pins jiter<0.15, which the OpenAI SDK (jiter>=0.16) has outgrown; it runs on the newer jiter
	# (tests/functional/test_tool_clients.py proves it), so it goes in without its own pins.
	$(BIN)/python -m pip install -q --no-deps -r requirements-instructor.txt
	touch $@

## make test: unit, functional and end-to-end tests (loopback only)
test: $(STAMP) browser node-clients
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make integration: the post-deploy check; against the stack STACK_NAME names (AWS credentials and
## BEHEST_TEST_ID_TOKEN from the environment), else against a make dev stack it starts on free ports
## (BEHEST_INTEGRATION_TARGET=local|deployed)
integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

# The browser test drives Debian's Chromium through chromedriver; installed here when missing.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium and chromium-driver (Debian packages) for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
		echo "note: the browser test needs chromium + chromedriver (Debian: apt-get install chromium chromium-driver)"; \
	fi

# The Node client tests drive openai-node and the Vercel AI SDK at the versions tests/node/package-lock.json pins;
# installed here when node_modules is missing or older than the lock file.
NODE_CLIENTS := tests/node
node-clients:
	@if ! command -v npm >/dev/null; then \
		echo "note: the Node client tests need Node 20+ and npm; tests/functional/test_node_clients.py skips without them"; \
	elif [ ! -d $(NODE_CLIENTS)/node_modules ] || [ $(NODE_CLIENTS)/package-lock.json -nt $(NODE_CLIENTS)/node_modules ]; then \
		echo "installing the Node clients (npm ci --prefix $(NODE_CLIENTS))"; \
		npm ci --prefix $(NODE_CLIENTS) --no-audit --no-fund --loglevel=error && touch $(NODE_CLIENTS)/node_modules \
			|| { rm -rf $(NODE_CLIENTS)/node_modules; exit 1; }; \
	fi

## make lint: ruff and mypy --strict on the functions
lint: $(STAMP)
	$(BIN)/ruff check functions tests devstack benchmarks
	$(BIN)/mypy

## make bench: cold-start and warm-path benchmarks; prints the figures and ratios
bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .aws-sam test-artifacts $(NODE_CLIENTS)/node_modules

## make dev: the whole product on loopback (identity provider, Secrets Manager, Behest stand-in, API)
dev: $(STAMP)
	$(BIN)/python -m devstack $(DEV_ARGS)
