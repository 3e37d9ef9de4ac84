# dtx-trials — the two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: run test lint pytest setup bench demo reliability clean translations

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## setup: virtualenv, packages, database migrations, example protocols and demo accounts
setup: $(STAMP)
	$(BIN)/dtx bootstrap

## run: set everything up and serve on http://$(HOST):$(PORT)
run: setup
	$(BIN)/dtx serve --host $(HOST) --port $(PORT)

## test: lint, type-check the cores, then the whole suite (SQLite, and PostgreSQL when TEST_DATABASE_URL is set)
test: $(STAMP) lint pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy ecrf randomization protocols analysis

## the suite runs on every core (at most 4 workers), a test file per worker at a time: each worker
## has its own SQLite and PostgreSQL databases and module fixtures stay within one process
pytest: $(STAMP)
	$(BIN)/python -m pytest -n auto --maxprocesses=4 --dist loadfile $(PYTEST_ARGS)

## demo: simulated participants in every example protocol, analyses and exports under out/demo
demo: $(STAMP)
	$(BIN)/dtx demo --out out/demo

## translations: extract the page labels (dtx_trials/web/translations/babel.cfg) to messages.pot and compile every catalog
## (.po -> .mo); a key new in the .pot is added to each messages.po by hand (the test says which)
translations: $(STAMP)
	$(BIN)/pybabel extract -F dtx_trials/web/translations/babel.cfg -k t -k tn -k _t -k translate -o dtx_trials/web/translations/messages.pot --no-location --omit-header .
	$(BIN)/pybabel compile -d dtx_trials/web/translations -D messages --statistics

bench: $(STAMP)
	$(BIN)/python -m bench

## reliability: worker crashes, PostgreSQL restart, API fuzzing and the security scan at full size
reliability: $(STAMP)
	TEST_DATABASE_URL=$${TEST_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test} \
	TEST_REDIS_URL=$${TEST_REDIS_URL:-redis://127.0.0.1:6379/15} \
	DTX_RELIABILITY=full $(BIN)/python -m pytest tests/reliability $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache
