# One entry point for users and CI. Every target sets up its own venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint bench soak clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench,redis]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/chatserver $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python -m benchmarks.run $(ARGS)

# A bounded long run (10 minutes; ARGS="--seconds 60" for a short one): writes benchmarks/SOAK.md.
# ARGS="--redis": the same on two nodes and a Redis restarted half way (benchmarks/SOAK-REDIS.md).
soak: install
	$(BIN)/python -m benchmarks.soak $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
