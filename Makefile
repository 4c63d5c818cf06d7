# Everything runs in a local virtualenv (.venv) that these targets create and fill themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: train sweep test bench lint clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "twolayer-xp needs Python >= 3.10, this is " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# One stamp per extra: reinstall only when pyproject.toml changes.
$(VENV)/.installed-cli: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[cli]"
	touch $@

$(VENV)/.installed-sweep: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[cli,sweep]"
	touch $@ $(VENV)/.installed-cli

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed-cli $(VENV)/.installed-sweep

## train: the main job: train on the embedded digits data (make train ARGS="--device cuda")
train: $(VENV)/.installed-cli
	$(BIN)/twolayer-xp train $(ARGS)

## sweep: a hyperparameter search with Optuna (make sweep ARGS="--trials 64 --population 32")
sweep: $(VENV)/.installed-sweep
	$(BIN)/twolayer-xp sweep $(ARGS)

## test: the whole test suite (CI runs exactly this)
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(ARGS)

## bench: the throughput benchmarks (numpy; CuPy and torch when usable)
bench: $(VENV)/.installed-test
	$(BIN)/python -m pytest benchmarks --benchmark-only --benchmark-json=bench.json $(ARGS)
	$(BIN)/python -m twolayer_xp.bench.report bench.json

lint: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check src tests benchmarks && $(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .hypothesis .benchmarks
