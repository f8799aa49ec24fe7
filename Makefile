# bnexp — `make help` lists the targets. The first target that needs Python
# creates .venv and installs the project into it; a stamp file makes later calls instant.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= configs/quickstart.yaml
RESULTS ?= results/quickstart
# the sweep targets write to results/$(NAME)-batch and results/$(NAME)-lr (the config file's name)
NAME ?= $(basename $(notdir $(CONFIG)))
PYTEST_ARGS ?=
BATCH_SIZES ?= 64 128 256 512
LRS ?= 0.01 0.03 0.1 0.3 1.0
SEEDS ?=
RUN_ARGS ?=
# the real data for `make reproduce`: the course's cat/non-cat files and the CIFAR-10 subset
DATA ?= $(or $(BNEXP_SHARED_DATA),../shared/data)
# "64 128 256" -> [64,128,256], the YAML list that --set sweep.<key>=... takes
comma := ,
empty :=
space := $(empty) $(empty)
yaml_list = [$(subst $(space),$(comma),$(strip $(1)))]
seeds_set = $(if $(strip $(SEEDS)),--set 'sweep.train.seed=$(call yaml_list,$(SEEDS))')

.DEFAULT_GOAL := help

.PHONY: help install quickstart test test-fast lint docs bench bench-gpu clean sweep-batch sweep-lr report reproduce reproduce-check

help: ## List the targets and what they do
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo ""
	@echo "  Variables: CONFIG=$(CONFIG) NAME=$(NAME) RESULTS=$(RESULTS) PYTEST_ARGS='...'"
	@echo "             BATCH_SIZES='$(BATCH_SIZES)' LRS='$(LRS)' SEEDS='0 1 2' (default: the config's) RUN_ARGS='--workers 4 ...'"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch and torchvision as a matched pair (the CPU wheels on this machine's disk where present)
	$(BIN)/pip install "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -e '.[dev,ray,mlflow,tensorboard]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install bnexp with its dev tools, Ray, MLflow and TensorBoard (extras)

quickstart: $(STAMP) ## Install, then run the embedded default experiment and print the comparison
	$(BIN)/bnexp run configs/quickstart.yaml

sweep-batch: $(STAMP) ## Sweep CONFIG over BATCH_SIZES (and SEEDS) into results/NAME-batch; rerun to resume
	$(BIN)/bnexp run $(CONFIG) --set name=$(NAME)-batch --set 'sweep.train.batch_size=$(call yaml_list,$(BATCH_SIZES))' $(seeds_set) $(RUN_ARGS)

sweep-lr: $(STAMP) ## Sweep CONFIG over learning rates LRS (and SEEDS) into results/NAME-lr; rerun to resume
	$(BIN)/bnexp run $(CONFIG) --set name=$(NAME)-lr --set 'sweep.train.lr=$(call yaml_list,$(LRS))' $(seeds_set) $(RUN_ARGS)

report: $(STAMP) ## Tables and plots for the results folder RESULTS (bnexp report)
	$(BIN)/bnexp report $(RESULTS)

reproduce: $(STAMP) ## Rerun every study the README quotes (configs/studies/*, DATA=../shared/data); resumable
	$(BIN)/bnexp run configs/studies/catvnoncat_course.yaml --set data.root=$(DATA)/catvnoncat $(RUN_ARGS)
	$(BIN)/bnexp run configs/studies/catvnoncat_standardized.yaml --set data.root=$(DATA)/catvnoncat $(RUN_ARGS)
	$(BIN)/bnexp run configs/studies/cifar10_batch.yaml $(CIFAR_DATA) $(RUN_ARGS)
	$(BIN)/bnexp run configs/studies/cifar10_ghost.yaml $(CIFAR_DATA) $(RUN_ARGS)
	$(BIN)/bnexp run configs/studies/catvnoncat_course_val.yaml --set data.root=$(DATA)/catvnoncat $(RUN_ARGS)
	$(BIN)/bnexp run configs/studies/catvnoncat_standardized_val.yaml --set data.root=$(DATA)/catvnoncat $(RUN_ARGS)
	$(BIN)/bnexp run configs/studies/cifar10_regularization.yaml $(CIFAR_DATA) $(RUN_ARGS)
	$(BIN)/bnexp run configs/studies/cifar10_batch_fixed_steps.yaml $(CIFAR_DATA) $(RUN_ARGS)

# the reduced versions a reviewer reruns: other seeds, fewer cells, another CIFAR-10 subset
CIFAR_DATA = --set data.train=$(DATA)/cifar10-subset/train.npz --set data.test=$(DATA)/cifar10-subset/test.npz
CIFAR_CHECK = --set data.train_per_class=250 --set data.seed=1 --set 'sweep.train.seed=[5,6]'

reproduce-check: $(STAMP) ## Reduced reruns of the studies (other seeds and cells, another CIFAR subset) into results/*_check
	$(BIN)/bnexp run configs/studies/catvnoncat_course.yaml --set data.root=$(DATA)/catvnoncat --set name=catvnoncat_course_check --set 'sweep.train.seed=[5,6,7]' --set 'sweep.train.batch_size=[16,209]' --set 'sweep.train.lr=[0.01,0.3]' --set 'sweep.model.norm=[none,torch]' $(RUN_ARGS)
	$(BIN)/bnexp run configs/studies/catvnoncat_standardized.yaml --set data.root=$(DATA)/catvnoncat --set name=catvnoncat_standardized_check --set 'sweep.train.seed=[5,6,7]' --set 'sweep.train.batch_size=[16,209]' --set 'sweep.train.lr=[0.01,0.1]' --set 'sweep.model.norm=[none,torch]' $(RUN_ARGS)
	$(BIN)/bnexp run configs/studies/cifar10_batch.yaml $(CIFAR_DATA) --set name=cifar10_batch_check $(CIFAR_CHECK) --set 'sweep.train.batch_size=[64,512]' $(RUN_ARGS)
	$(BIN)/bnexp run configs/studies/cifar10_ghost.yaml $(CIFAR_DATA) --set name=cifar10_ghost_check $(CIFAR_CHECK) --set 'sweep.model.ghost_batch_size=[16,512]' $(RUN_ARGS)

test: $(STAMP) ## Install, then run every test (slow ones included)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## Run the tests not marked slow
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP) ## Time bnexp's training loop against hand-written ones, vectorized seeds, workers, memory (table + benchmarks/results.csv)
	$(BIN)/python -m benchmarks.run

bench-gpu: $(STAMP) ## The same comparisons on a CUDA GPU (section gpu and the BN layer; benchmarks/gpu_check.sh without make)
	$(BIN)/python -m benchmarks.run --device cuda --out benchmarks/results-gpu.csv

lint: $(STAMP) ## Check style with ruff
	$(BIN)/ruff check bnexp tests benchmarks

docs: $(STAMP) ## Regenerate docs/config.md (the config reference) from the schema
	$(BIN)/python -m bnexp.config.reference > docs/config.md.tmp && mv docs/config.md.tmp docs/config.md

clean: ## Remove caches and results (keeps .venv; `rm -rf .venv` for a full reset)
	rm -rf .pytest_cache .ruff_cache bnexp.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find results -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
