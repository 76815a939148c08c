# The one entry point: `make help` lists the targets. CI runs `make lint`, then `make test`
# (see .ci/run).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DIARIZE_STAMP := $(VENV)/.installed-diarize
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e clients/python
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the service with its dev tools and the Python client

# The diarize extra (speaker labels) for its tests; `make run` and `make install` go
# without it. PyTorch for the CPU first: PyPI's own build is CUDA's (GBs);
# TORCH_INDEX=https://pypi.org/simple for that one instead. About a minute.
$(DIARIZE_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --retries 1 --timeout 30 --index-url $(TORCH_INDEX) torch \
		|| echo "WARNING: no torch from $(TORCH_INDEX): pip takes PyPI's (CUDA) build next"
	$(BIN)/pip install --quiet -e '.[diarize]'
	touch $(DIARIZE_STAMP)

install-diarize: $(DIARIZE_STAMP) ## add the diarize extra (speaker labels, CPU PyTorch) to .venv; make test does

run: $(STAMP) ## run all four services on this machine (SQLite, tiny.en, two transcribers)
	@echo "operate it from another shell: . .venv/bin/activate; transcription --help"
	$(BIN)/transcription run --transcribers 2

test: $(STAMP) $(DIARIZE_STAMP) promtool chromium ## run every test (PostgreSQL from TEST_DATABASE_URL; see README)
	$(BIN)/pytest

# The alert rules' tests need promtool: Debian's `prometheus` package has it. Where apt-get
# is missing (or not root), say so and go on: those tests are then skipped, not failed.
promtool: ## install promtool (Debian package prometheus) for the alert tests, if missing
	@command -v promtool >/dev/null && exit 0; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing promtool (apt-get install prometheus) for the alert tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
		|| { apt-get update && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends prometheus; } \
		|| echo "WARNING: could not install promtool: the alert rule tests will be SKIPPED"; \
	else \
		echo "WARNING: promtool missing and apt-get unavailable (or not root): the alert" \
			"rule tests will be SKIPPED; install Prometheus's promtool to run them"; \
	fi

# The API docs' test renders /docs in a headless browser with the network off: Debian's
# chromium-headless-shell. Where apt-get is missing (or not root), say so and go on: that
# test is then skipped locally (it fails in CI, where CI is set).
chromium: ## install headless Chromium (Debian package chromium-headless-shell) for the docs test
	@command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null && exit 0; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium-headless-shell (apt-get) for the API docs test"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			chromium-headless-shell \
		|| { apt-get update && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends chromium-headless-shell; } \
		|| echo "WARNING: could not install Chromium: the API docs browser test will be" \
			"SKIPPED (it FAILS in CI)"; \
	else \
		echo "WARNING: Chromium missing and apt-get unavailable (or not root): the API docs" \
			"browser test will be SKIPPED; install chromium-headless-shell to run it"; \
	fi

lint: $(STAMP) $(DIARIZE_STAMP) ## ruff check, format check, mypy --strict on the services and the client (the diarize extra too: mypy reads torch's types)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) espeak-ng ## every benchmark (long: the sustained run alone is 10 min); results in bench/results/
	command -v wrk >/dev/null || { echo "bench needs wrk: apt-get install -y wrk"; exit 1; }
	$(BIN)/python -m bench all

bench-smoke: $(STAMP) ## each benchmark's smallest run (~12 min on 2 cores), to see they still work; results in bench/results/tmp/smoke/
	$(BIN)/python -m bench --smoke

bench-backlog: $(STAMP) ## claim rounds and drain rate with 10 M finished and up to 1 M queued jobs (~40 min)
	$(BIN)/python -m bench backlog

bench-ceiling: $(STAMP) ## the pipeline's highest held job rate, the model a stand-in: ramp, then 10 min at the best (~25 min)
	$(BIN)/python -m bench ceiling

bench-long-eval: $(STAMP) espeak-ng ## WER and time on real and synthetic long recordings: the service's chunks vs faster-whisper (~5 min, tiny.en; ARGS="--model base")
	$(BIN)/python -m bench long-media-eval $(ARGS)

# The synthetic speech of bench long-media-eval is spoken by espeak-ng (Debian package).
espeak-ng: ## install espeak-ng (Debian package) for bench long-media-eval, if missing
	@command -v espeak-ng >/dev/null && exit 0; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing espeak-ng (apt-get) for bench long-media-eval"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends espeak-ng \
		|| { apt-get update && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends espeak-ng; }; \
	else \
		echo "espeak-ng missing and apt-get unavailable (or not root): install espeak-ng"; \
		exit 1; \
	fi

bench-model-memory: $(STAMP) ## the model server's peak RSS given a 10-hour FLAC (~2 min); results in bench/results/
	$(BIN)/python -m bench model-server-memory

bench-gpu: $(STAMP) ## the model server against faster-whisper on CUDA (MODEL_DIR=a faster-whisper model dir; default tiny.en); results in bench/results/
	$(BIN)/python -m bench gpu --device cuda $(if $(MODEL_DIR),--model-dir $(MODEL_DIR))

faults: $(STAMP) ## every fault drill at full length; report in faults/results/
	$(BIN)/python -m faults

migrate: $(STAMP) ## bring DATABASE_URL's schema to the current version
	$(BIN)/transcription migrate

docs: $(STAMP) ## regenerate the settings table in README.md
	$(BIN)/python scripts/update_readme_settings.py

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

.PHONY: help install install-diarize run test promtool chromium espeak-ng lint format bench bench-smoke bench-backlog bench-ceiling bench-long-eval bench-model-memory bench-gpu faults migrate docs clean
