# The two commands a newcomer needs are `make app` and `make test` (see README.md).
PYTHON ?= python3
APP_VENV := .venv-app
DEV_VENV := .venv
# The demo weights are not committed: a fresh clone builds them once (synthvox world + GE2E head, minutes;
# scripts/build_default_bundle.py --quick) with the training venv; the app itself runs without torch.
DEFAULT_BUNDLE := models/default/bundle.json

.PHONY: app test test-quick lint bench venv-app venv-dev

$(APP_VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(APP_VENV)
	$(APP_VENV)/bin/pip install -q -U pip
	$(APP_VENV)/bin/pip install -q -r requirements.txt
	touch $@

$(DEV_VENV)/.installed: requirements.txt requirements-train.txt requirements-dev.txt
	$(PYTHON) -m venv $(DEV_VENV)
	$(DEV_VENV)/bin/pip install -q -U pip
	$(DEV_VENV)/bin/pip install -q -r requirements-dev.txt
	$(DEV_VENV)/bin/pip install -q --no-deps resemblyzer==0.1.4
	touch $@

venv-app: $(APP_VENV)/.installed
venv-dev: $(DEV_VENV)/.installed

$(DEFAULT_BUNDLE):
	$(MAKE) venv-dev
	$(DEV_VENV)/bin/python scripts/build_default_bundle.py --quick

## Install what the app needs (no torch), build the default model once if missing, start the app.
app: venv-app $(DEFAULT_BUNDLE)
	$(APP_VENV)/bin/python app.py $(ARGS)

## Install test needs and run the whole test suite (lint included).
test: venv-dev
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/lint-imports
	$(DEV_VENV)/bin/python -m pytest $(PYTEST_ARGS)

## A quicker subset for local iteration.
test-quick: venv-dev
	$(DEV_VENV)/bin/python -m pytest -m "not slow and not browser" -x -q

## Style (ruff) and architecture (lint-imports: the contracts in pyproject.toml).
lint: venv-dev
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/lint-imports

bench: venv-dev
	for f in benchmarks/bench_*.py; do $(DEV_VENV)/bin/python $$f || exit 1; done
