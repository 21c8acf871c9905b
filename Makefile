# Thin wrapper over `python -m lmsys_arena`; every target first makes .venv (see `make setup`).
#   make folds train infer                    # xgb on input/lmsys-chatbot-arena, else the bundled input/sample
#   make train MODEL=lgbm EXTRA=../shared/data/lmsys-arena-subset/extra_arena33k.csv
#   make score ; make check ; make config MODEL=gemma3-270m ; make test
# Variables: DATA EXTRA (train-only rows) MODEL RUN FOLDS SEED SKIP_BAD=1 ONLY_FOLDS=0,1 FRESH=1 FULL=1
# PSEUDO PSEUDO_WEIGHT PSEUDO_MIN_PROB EXTRA_WEIGHT (train-only rows, docs/data.md) TEACHER POOL OUT (make pseudo)
# SET="key=value ..." PARAMS GPUS BACKBONE LOG_LEVEL; README.md "Conventions" has the table.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

DATA ?= $(if $(wildcard input/lmsys-chatbot-arena/train.csv),input/lmsys-chatbot-arena,input/sample)
EXTRA ?=
EXTRA_WEIGHT ?=
# soft-labelled train-only rows (make pseudo TEACHER=<run> POOL=<csv> [OUT=<csv>] writes them; docs/data.md)
PSEUDO ?=
PSEUDO_WEIGHT ?=
PSEUDO_MIN_PROB ?=
TEACHER ?=
POOL ?=
# OUT is read from the command line only (an OUT in the environment is ignored)
OUT ?=
MODEL ?= xgb
# runs.default_run_name: <model> on the competition data, <model>-<data folder> on any other
DATA_NAME := $(notdir $(abspath $(DATA)))
RUN ?= $(notdir $(basename $(MODEL)))$(if $(filter lmsys-chatbot-arena,$(DATA_NAME)),,-$(DATA_NAME))
FOLDS ?= 5
FRAC ?= 0.15
SEED ?= 42
PARAMS ?=
STUDY ?= $(RUN)
TRIALS ?= 20
STORAGE ?=
WORKERS ?= 1
GPUS ?= 1
BACKBONE ?=
ONLY_FOLDS ?=
FRESH ?=
FULL ?=
METHOD ?=
RANK ?=
HEADS ?=
QUANT ?=
VERSION ?=
SUB ?= submissions/$(RUN).csv
LABELS ?=
RUNS ?=
NAME ?=
SET ?=
# ensembles and kernels (docs/ensemble.md, docs/kaggle.md)
COMMON_ROWS ?=
OOF_ONLY ?=
SPACE ?=
FIT_LABELS ?=
FALLBACK ?=
BUDGET_H ?=
MODEL_SOURCE ?=
LLM_SET ?=
WHEELS ?=
IMAGE ?=
MESSAGE ?=
SIM_DATA ?=
SKIP_BAD ?=
LOG_LEVEL ?=
# make serve (docs/serve.md)
PORT ?= 7860
HOST ?=
EXTRAS ?= llm,tune,kaggle,dev,report,serve

# torch==$(TORCH_VERSION) is installed first, so nothing later re-resolves it: from the configured index
# (this project's CPU machines have a local CPU wheel), or TORCH_INDEX, e.g. PyTorch's CPU wheel index
# https://download.pytorch.org/whl/cpu on a plain Linux box. A guard fails the install if any nvidia-*
# wheel arrives on a machine without CUDA.
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=

LOG_ARG := $(if $(LOG_LEVEL),--log-level $(LOG_LEVEL))
CLI := $(PY) -m lmsys_arena $(LOG_ARG)
BAD_ARGS := $(if $(SKIP_BAD),--skip-bad)
DATA_ARGS := --data $(DATA) $(if $(EXTRA),--extra $(EXTRA)) $(BAD_ARGS)
TRAIN_ONLY_ARGS := $(if $(EXTRA_WEIGHT),--extra-weight $(EXTRA_WEIGHT)) $(if $(PSEUDO),--pseudo $(PSEUDO)) \
	$(if $(PSEUDO_WEIGHT),--pseudo-weight $(PSEUDO_WEIGHT)) $(if $(PSEUDO_MIN_PROB),--pseudo-min-prob $(PSEUDO_MIN_PROB))
MODEL_ARGS := --model $(MODEL) $(if $(PARAMS),--params $(PARAMS)) $(if $(filter best,$(PARAMS)),--study $(STUDY)) \
	$(if $(BACKBONE),--set 'backbone=$(BACKBONE)') $(foreach s,$(SET),--set $(s))
LAUNCH := $(if $(filter-out 1,$(GPUS)),$(PY) -m torch.distributed.run --standalone --nproc_per_node $(GPUS) -m lmsys_arena --,$(PY) -m lmsys_arena)

.PHONY: report serve judge pseudo merge export submit setup folds holdout train infer score check config docs lint format test tune best ensemble kernels kernel-datasets \
	check-kernels push clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
ifneq ($(HAS_CUDA),1)
	@if $(PY) -m pip list 2>/dev/null | grep -i '^nvidia-'; then \
		echo "error: CUDA wheels (above) were pulled on a machine without CUDA: a dependency asks for plain torch/xgboost"; \
		exit 1; fi
endif
	@touch $@

setup: $(STAMP)

folds: $(STAMP)
	$(CLI) folds --data $(DATA) --folds $(FOLDS) --seed $(SEED) $(BAD_ARGS)

# a held-out split of DATA: $(DATA)-holdout/ (train on it), its _labels.csv and _extra.csv (docs/data.md)
holdout: $(STAMP)
	$(CLI) holdout --data $(DATA) $(if $(EXTRA),--extra $(EXTRA)) --frac $(FRAC) --seed $(SEED)

train: $(STAMP)
	$(LAUNCH) train $(LOG_ARG) $(DATA_ARGS) $(TRAIN_ONLY_ARGS) $(MODEL_ARGS) --run $(RUN) --seed $(SEED) \
		$(if $(ONLY_FOLDS),--only-folds $(ONLY_FOLDS)) $(if $(FRESH),--fresh) $(if $(FULL),--full)

# the zero-shot baseline of an llm config: its untrained backbone as a judge (runs/<model>-judge[-<data>]/)
judge: $(STAMP)
	$(LAUNCH) judge $(LOG_ARG) --data $(DATA) $(BAD_ARGS) $(MODEL_ARGS) --seed $(SEED) \
		$(if $(filter command line environment,$(origin RUN)),--run $(RUN)) \
		$(if $(ONLY_FOLDS),--only-folds $(ONLY_FOLDS)) $(if $(FRESH),--fresh)

# a pool of battles without labels scored by a teacher run -> a CSV of soft-labelled rows for PSEUDO=
pseudo: $(STAMP)
	$(CLI) pseudo --teacher $(TEACHER) --pool $(POOL) $(if $(filter command line,$(origin OUT)),--out $(OUT)) $(BAD_ARGS)

# one model from a run's folds (LLM), its adapter merged into fp16 weights for T4 (docs/kaggle.md)
merge: $(STAMP)
	$(CLI) merge --run $(RUN) $(if $(NAME),--name $(NAME)) $(if $(METHOD),--method $(METHOD)) \
		$(if $(RANK),--rank $(RANK)) $(if $(HEADS),--heads $(HEADS)) $(if $(FRESH),--fresh)

export: $(STAMP)
	$(CLI) export --run $(RUN) $(if $(NAME),--name $(NAME)) $(if $(QUANT),--quant $(QUANT)) $(if $(FRESH),--fresh)

infer: $(STAMP)
	$(CLI) infer --run $(RUN)$(if $(FULL),-full) $(if $(filter command line environment,$(origin DATA)),--data $(DATA))

score: $(STAMP)
	$(CLI) score --run $(RUN) $(if $(LABELS),--labels $(LABELS))

# one self-contained HTML file comparing RUNS on their OOF rows: runs/<NAME>/report.html (docs/report.md)
report: $(STAMP)
	$(CLI) report --runs $(RUNS) $(if $(NAME),--name $(NAME)) \
		$(if $(filter command line environment,$(origin DATA)),--data $(DATA))

# a local web page scoring one battle with RUN's models, on http://127.0.0.1:$(PORT)/ (docs/serve.md)
serve: $(STAMP)
	$(CLI) serve --run $(RUN) --port $(PORT) $(if $(HOST),--host $(HOST))

check: $(STAMP)
	$(CLI) check --sub $(SUB) --data $(DATA) $(BAD_ARGS)

config: $(STAMP)
	$(CLI) config $(MODEL) $(if $(PARAMS),--params $(PARAMS)) $(if $(filter best,$(PARAMS)),--study $(STUDY)) \
		$(if $(BACKBONE),--set 'backbone=$(BACKBONE)') $(foreach s,$(SET),--set $(s))

docs: $(STAMP)
	$(CLI) config --reference --out docs/config-reference.md

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

format: $(STAMP)
	$(PY) -m ruff check --fix src tests benchmarks
	$(PY) -m ruff format src tests benchmarks

# what CI runs (.ci/run): the linters, then the suite with a throwaway PostgreSQL when its binaries exist
test: lint
	scripts/with-postgres $(PY) -m pytest tests

# Optuna: TRIALS = the study's total (COMPLETE+PRUNED), resumable; WORKERS local processes (1 core or GPU each);
# STORAGE any SQLAlchemy URL (default sqlite:///studies/$(STUDY).db); then `make best`, `make train PARAMS=best`
tune: $(STAMP)
	$(CLI) tune $(DATA_ARGS) $(MODEL_ARGS) --study $(STUDY) --trials $(TRIALS) --seed $(SEED) \
		--workers $(WORKERS) $(if $(STORAGE),--storage $(STORAGE))

best: $(STAMP)
	$(CLI) best --study $(STUDY) $(if $(STORAGE),--storage $(STORAGE))

ensemble: $(STAMP)
	$(CLI) ensemble --runs $(RUNS) $(if $(NAME),--name $(NAME)) $(if $(COMMON_ROWS),--common-rows) \
		$(if $(SPACE),--space $(SPACE)) $(if $(OOF_ONLY),--oof-only) $(if $(FIT_LABELS),--fit-labels $(FIT_LABELS))

kernels: $(STAMP)
	$(CLI) kernels --runs $(RUNS) $(if $(NAME),--name $(NAME)) $(if $(FALLBACK),--fallback $(FALLBACK)) \
		$(if $(BUDGET_H),--budget-hours $(BUDGET_H)) $(foreach s,$(MODEL_SOURCE),--model-source $(s)) \
		$(foreach s,$(LLM_SET),--llm-set $(s)) $(if $(IMAGE),--image $(IMAGE))

kernel-datasets: $(STAMP)
	$(CLI) kernel-datasets $(if $(NAME),--names $(NAME)) $(if $(WHEELS),--wheels $(WHEELS))

check-kernels: $(STAMP)
	$(CLI) check-kernels $(if $(NAME),--names $(NAME)) $(if $(SIM_DATA),--data $(SIM_DATA))

push: $(STAMP)
	$(CLI) push $(if $(NAME),--names $(NAME)) $(if $(MESSAGE),--message "$(MESSAGE)")

# code competitions score a kernel version: VERSION defaults to the one `make push` recorded
submit: $(STAMP)
	$(CLI) submit --name $(NAME) $(if $(VERSION),--version $(VERSION)) $(if $(MESSAGE),--message "$(MESSAGE)")

clean-venv:
	rm -rf $(VENV)
