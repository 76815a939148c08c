# The one entry point: `make help` lists the targets. CI runs `make lint`, then `make test`
# (see .ci/run).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the service with its dev tools

run: $(STAMP) ## run all four services on this machine (SQLite, the bundled tiny.en model)
	$(BIN)/transcription run

test: $(STAMP) ## run every test (PostgreSQL from TEST_DATABASE_URL; see README)
	$(BIN)/pytest

lint: $(STAMP) ## ruff check, format check, mypy --strict on the services
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) ## every benchmark (long: the sustained run alone is 10 min); results in bench/results/
	command -v wrk >/dev/null || { echo "bench needs wrk: apt-get install -y wrk"; exit 1; }
	$(BIN)/python bench/enqueue.py
	$(BIN)/python bench/pickup.py
	$(BIN)/python bench/long_media.py
	$(BIN)/python bench/long_media_designs.py
	$(BIN)/python bench/memory.py --fresh
	$(BIN)/python bench/model_server_memory.py
	$(BIN)/python bench/sustained.py --rate sustainable
	$(BIN)/python bench/update_readme.py

bench-model-memory: $(STAMP) ## the model server's peak RSS given a 10-hour FLAC (~2 min); results in bench/results/
	$(BIN)/python bench/model_server_memory.py

faults: $(STAMP) ## every fault drill at full length; report in faults/results/
	$(BIN)/python -m faults

migrate: $(STAMP) ## bring DATABASE_URL's schema to the current version
	$(BIN)/transcription migrate

docs: $(STAMP) ## regenerate the settings table in README.md
	$(BIN)/python scripts/update_readme_settings.py

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

.PHONY: help install run test lint format bench bench-model-memory faults migrate docs clean
