# The two commands a newcomer needs are `make app` and `make test` (see README.md).
PYTHON ?= python3
APP_VENV := .venv-app
DEV_VENV := .venv
# The default model is committed (models/default): the app needs no training, no torch, no assets.
# System packages (scripts/system_packages.sh installs them when run as root on Debian/Ubuntu, else says how):
APP_PACKAGES := ffmpeg  # optional: decodes browser recordings and webm/m4a/mp4 uploads
BUILD_PACKAGES := espeak-ng  # the synthetic voices of synthvox worlds (training, the default bundle's rebuild)
TEST_PACKAGES := ffmpeg espeak-ng sox chromium libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 libosmesa6

.PHONY: app test test-quick lint format bench venv-app venv-dev default-bundle

$(APP_VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(APP_VENV) || { scripts/system_packages.sh "Python virtual environments" python3-venv \
		&& $(PYTHON) -m venv $(APP_VENV); }
	$(APP_VENV)/bin/pip install -q -U pip
	$(APP_VENV)/bin/pip install -q -r requirements.txt
	touch $@

$(DEV_VENV)/.installed: requirements.txt requirements-train.txt requirements-dev.txt
	$(PYTHON) -m venv $(DEV_VENV) || { scripts/system_packages.sh "Python virtual environments" python3-venv \
		&& $(PYTHON) -m venv $(DEV_VENV); }
	$(DEV_VENV)/bin/pip install -q -U pip
	$(DEV_VENV)/bin/pip install -q -r requirements-dev.txt
	$(DEV_VENV)/bin/pip install -q --no-deps resemblyzer==0.1.4
	touch $@

venv-app: $(APP_VENV)/.installed
venv-dev: $(DEV_VENV)/.installed

## Install what the app needs (no torch) and start it with the committed default model.
app: venv-app
	@scripts/system_packages.sh --optional "reading browser recordings and webm/m4a uploads" $(APP_PACKAGES)
	$(APP_VENV)/bin/python app.py $(ARGS)

## Rebuild models/default bit for bit from its seed (CPU, about half an hour; needs the shared assets).
default-bundle: venv-dev
	@scripts/system_packages.sh "building synthvox worlds (synthetic voices)" $(BUILD_PACKAGES)
	nice -n 5 $(DEV_VENV)/bin/python scripts/build_default_bundle.py

## Install test needs and run the whole test suite (lint included).
test: venv-dev
	@scripts/system_packages.sh "the test suite (synthetic voices, audio formats, face renders, browser)" \
		$(TEST_PACKAGES)
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/ruff format --check .
	$(DEV_VENV)/bin/lint-imports
	$(DEV_VENV)/bin/python -m pytest $(PYTEST_ARGS)

## A quicker subset for local iteration.
test-quick: venv-dev
	@scripts/system_packages.sh "the test suite (synthetic voices, audio formats, face renders, browser)" \
		$(TEST_PACKAGES)
	$(DEV_VENV)/bin/python -m pytest -m "not slow and not browser" -x -q

## Style (ruff) and architecture (lint-imports: the contracts in pyproject.toml).
lint: venv-dev
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/ruff format --check .
	$(DEV_VENV)/bin/lint-imports

## Apply the project's formatting (ruff format).
format: venv-dev
	$(DEV_VENV)/bin/ruff format .

bench: venv-dev
	for f in benchmarks/bench_*.py; do $(DEV_VENV)/bin/python $$f || exit 1; done
