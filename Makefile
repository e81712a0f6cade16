# One test command: `make test`. It builds .venv on first use (and again when
# pyproject.toml changes), then runs ruff, pytest and a short fuzz run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
FUZZ_BUDGET ?= 55
FUZZ_SEEDS ?= 600

.PHONY: test lint pytest fuzz-short fuzz bench run install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check crdtbook node tests fuzz bench

pytest: $(STAMP)
	$(PY) -m pytest -q

fuzz-short: $(STAMP)
	$(PY) -m fuzz --seeds $(FUZZ_SEEDS) --budget $(FUZZ_BUDGET)

test: lint pytest fuzz-short

fuzz: $(STAMP)
	$(PY) -m fuzz --budget 600

bench: $(STAMP)
	$(PY) bench/core.py
	$(PY) bench/cluster.py
	$(PY) bench/memory.py

run: $(STAMP)
	$(VENV)/bin/crdtbook devnet --demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
