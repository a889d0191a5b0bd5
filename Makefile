# The two commands a newcomer runs on a fresh machine (Python 3.11+ is all it needs):
#   make bench   set up .venv and run the main job (`fabric bench` on an embedded local mesh)
#   make test    set up .venv and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup bench demo test lint clean

$(STAMP): pyproject.toml
	bash scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

bench: $(STAMP)
	$(BIN)/fabric bench $(ARGS)

demo: $(STAMP)
	$(BIN)/fabric demo

test: $(STAMP)
	$(BIN)/ruff check fabric sdk gateways bench tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
