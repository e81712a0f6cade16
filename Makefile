# One test command: `make test`. It builds .venv on first use (and again when
# pyproject.toml changes), installs the Grenache npm packages the interop tests
# use (tests/grenache) and Chromium from the distribution's packages (the web
# page's test drives it; nothing downloads browsers), then runs ruff, pytest
# and a short fuzz run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
FUZZ_BUDGET ?= 180
FUZZ_SEEDS ?= 600

GRENACHE := tests/grenache
GRENACHE_STAMP := $(GRENACHE)/node_modules/.installed-stamp

.PHONY: test lint pytest fuzz-short fuzz bench run install clean grenache test-grenache chromium

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check crdtbook node tests fuzz bench

# Real Grenache components (grapes, JS PeerRPC) for the interop tests, from npm.
grenache: $(GRENACHE_STAMP)

$(GRENACHE_STAMP): $(GRENACHE)/package.json
	@command -v node >/dev/null 2>&1 || { echo "make: Node.js is needed for the Grenache interop tests (apt-get install nodejs)" >&2; exit 1; }
	@command -v npm >/dev/null 2>&1 || { echo "make: npm is needed for the Grenache interop tests (apt-get install npm)" >&2; exit 1; }
	cd $(GRENACHE) && npm install --no-audit --no-fund --loglevel=error
	touch $(GRENACHE_STAMP)

# Chromium for tests/test_web.py, from the distribution (apt), when it is missing:
# as root, else with sudo; never a browser build downloaded by playwright.
CHROMIUM := /usr/bin/chromium

chromium: $(CHROMIUM)

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; \
	elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	else echo "make: $(CHROMIUM) is missing and this user can neither apt-get install it nor sudo;" \
	     "install the 'chromium' package (the web page's test needs it)" >&2; exit 1; fi; \
	echo "make: installing chromium from the distribution's packages (for tests/test_web.py)"; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium \
	|| { echo "make: apt-get install chromium failed; install it by hand (the web page's test needs it)" >&2; exit 1; }

test-grenache: $(STAMP) $(GRENACHE_STAMP)
	$(PY) -m pytest -q tests/test_grenache.py

pytest: $(STAMP) $(GRENACHE_STAMP) $(CHROMIUM)
	$(PY) -m pytest -q

fuzz-short: $(STAMP)
	$(PY) -m fuzz --seeds $(FUZZ_SEEDS) --budget $(FUZZ_BUDGET)

test: lint pytest fuzz-short

fuzz: $(STAMP)
	$(PY) -m fuzz --budget 600

bench: $(STAMP)
	$(PY) bench/peers.py
	$(PY) bench/core.py
	$(PY) bench/cluster.py
	$(PY) bench/httpentry.py
	$(PY) bench/memory.py
	$(PY) bench/stream.py

run: $(STAMP)
	$(VENV)/bin/crdtbook devnet --demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis $(GRENACHE)/node_modules
