# Two commands do everything on a fresh machine with Python 3.11:  make repro  and  make test.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
KERNEL := brain-mri-study
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
export PYTHONHASHSEED := 0
export TF_CPP_MIN_LOG_LEVEL := 2
export MPLBACKEND := Agg

.PHONY: help setup data repro test test-fast mutation lab serve bench crosscheck report lint lock \
	phantom clean exps sweep-guide sweep import-feedback

# make help lists every target with a "## " comment on its line, in the order of this file.
help: ## this list
	@echo "Two commands do everything on a fresh machine with Python 3.11: make repro and make test."
	@awk -F ':[^#]*## ' '/^[a-z][a-z-]*:[^=]*## / {printf "  make %-11s %s\n", $$1, $$2}' $(firstword $(MAKEFILE_LIST))
	@echo "Variables: PYTHON=/path/to/python3.11;  TF_PACKAGE='tensorflow[and-cuda]' with make setup"
	@echo "  installs the GPU build of TensorFlow, kept until changed (README: GPU install);"
	@echo "  EXPS_ARGS='--only-changed' (or any dvc exp show option) with make exps."
	@echo "  SWEEP_STAGE=train_scratch@none, SWEEP_ARGS='--jobs 1 --threads 2' with make sweep."

# TensorFlow: requirements.txt pins the CPU wheel (tensorflow-cpu). On a CUDA machine
#   make setup TF_PACKAGE='tensorflow[and-cuda]'
# installs the lock without tensorflow-cpu, plus that package (a name, extras allowed, no
# version) at the lock's TensorFlow version, and uninstalls the other build. The venv remembers
# the choice (.venv/.tf-package), so later make calls keep it; make setup TF_PACKAGE=tensorflow-cpu
# goes back. Each build has its own stamp (.venv/.installed for the CPU wheel), so a switch
# reinstalls; without TF_PACKAGE, setup is what it always was.
TF_DEFAULT := tensorflow-cpu
TF_CHOICE := $(VENV)/.tf-package
TF_PACKAGE ?= $(or $(strip $(file <$(TF_CHOICE))),$(TF_DEFAULT))
TF_VERSION := $(shell sed -n -E 's/^tensorflow[-_]cpu==([^ ;#]+).*/\1/p' requirements.txt)
# the distribution a requirement installs: tensorflow[and-cuda] -> tensorflow
tf_dist = $(firstword $(subst [, ,$(1)))
ifeq ($(TF_PACKAGE),$(TF_DEFAULT))
STAMP := $(VENV)/.installed
else
TF_TAG := $(subst ],,$(subst [,-,$(TF_PACKAGE)))
STAMP := $(VENV)/.installed-$(TF_TAG)
# the lock without its tensorflow-cpu pin
TF_REQUIREMENTS := $(VENV)/requirements-$(TF_TAG).txt
endif
# A setup with another TF_PACKAGE left its stamp, and its TensorFlow to uninstall first.
OLD_STAMPS = $(filter-out $(STAMP),$(wildcard $(VENV)/.installed $(VENV)/.installed-*))
OLD_TF = $(if $(OLD_STAMPS),$(filter-out $(call tf_dist,$(TF_PACKAGE)),\
	$(call tf_dist,$(or $(strip $(file <$(TF_CHOICE))),$(TF_DEFAULT)))))

setup: $(STAMP) ## create .venv: the pinned stack, the notebook kernel, nbstripout

# Pinned install, the project in editable mode, a named Jupyter kernel for papermill, and the
# nbstripout git filter so notebooks are committed without outputs. The kernel shows figures
# inline (the stages' MPLBACKEND=Agg would leave a Figure repr in the executed notebooks) and
# keeps TensorFlow's C++ log lines (benign tf.data graph notices) out of the rendered pages.
$(STAMP): requirements.txt pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || \
	  { echo "error: $(PYTHON) is not Python 3.11; run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(OLD_TF),$(BIN)/python -m pip uninstall --disable-pip-version-check -y -q $(OLD_TF))
ifeq ($(TF_PACKAGE),$(TF_DEFAULT))
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
else
	@test -n "$(TF_VERSION)" || { echo "error: requirements.txt pins no tensorflow-cpu version"; exit 1; }
	grep -v -i -E '^tensorflow[-_]cpu==' requirements.txt > $(TF_REQUIREMENTS)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r $(TF_REQUIREMENTS) \
	  '$(TF_PACKAGE)==$(TF_VERSION)'
endif
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) \
	  --display-name "Python 3.11 (brain-mri-study)" \
	  --env MPLBACKEND module://matplotlib_inline.backend_inline --env TF_CPP_MIN_LOG_LEVEL 3 >/dev/null
	-git rev-parse --git-dir >/dev/null 2>&1 && $(BIN)/nbstripout --install --attributes .gitattributes
	$(if $(OLD_STAMPS),rm -f $(OLD_STAMPS))
ifeq ($(TF_PACKAGE),$(TF_DEFAULT))
	$(if $(OLD_STAMPS),rm -f $(TF_CHOICE))
else
	echo '$(TF_PACKAGE)' > $(TF_CHOICE)
endif
	touch $(STAMP)

# data/raw comes from the DVC remote when one is configured, else the deterministic phantom is
# generated; either way data.dvc says whether the bytes are the committed ones.
data: setup ## make sure data/raw exists (DVC remote when configured, else the phantom)
	@if [ -d data/raw ]; then echo "data/raw present"; \
	elif [ -n "$$($(BIN)/dvc remote list)" ]; then $(BIN)/dvc pull data.dvc; \
	else $(BIN)/python -m lib.data.phantom --params params.yaml --out data/raw; fi
	@$(BIN)/dvc status data.dvc | grep -q "modified:" && \
	  echo "warning: data/raw differs from data.dvc (your own data? run 'dvc add data/raw' and commit data.dvc)" || true

phantom: setup ## regenerate data/raw from params.yaml's phantom: group (overwrites it)
	$(BIN)/python -m lib.data.phantom --params params.yaml --out data/raw --overwrite

repro: data ## set up .venv, make sure data/raw exists, run the whole study (dvc repro)
	$(BIN)/dvc repro

report: setup ## rebuild only the HTML report from existing outputs
	$(BIN)/dvc repro --single-item report

# Two pytest workers share the cores: each TensorFlow (and every stage the pipeline test runs)
# gets half of them, instead of both oversubscribing all (measured: 6:10 -> 5:51 on 2 cores).
TEST_THREADS := $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n / 2 > 0 ? n / 2 : 1 )))
test test-fast: export TF_NUM_INTRAOP_THREADS := $(TEST_THREADS)
test test-fast: export TF_NUM_INTEROP_THREADS := $(TEST_THREADS)

test: setup ## set up .venv, run the whole test suite (unit, notebooks, real dvc repro)
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --nbval-lax \
	  --nbval-current-env --durations=8 tests notebooks

# The edit loop: the unit tests not marked slow (no real dvc repro, no notebooks), about 100 s on 2 cores.
test-fast: setup ## unit tests only, for the edit loop (make test before you push)
	$(BIN)/python -m pytest -n 2 -m "not slow" -q tests

# Mutation testing, not part of make test: mutmut (config: [tool.mutmut] in pyproject.toml)
# mutates the functions of lib/stats.py, lib/jsonio.py, lib/splits.py and lib/explain/scores.py
# in a fresh copy under mutants/ and runs the fast unit tests that reach each mutated function,
# one worker per core, one TensorFlow thread each; then the summary and every surviving mutant.
mutation: export TF_NUM_INTRAOP_THREADS := 1
mutation: export TF_NUM_INTEROP_THREADS := 1
mutation: setup ## mutation testing of lib/stats.py, jsonio.py, splits.py, explain/scores.py
	rm -rf mutants
	@start=$$(date +%s); $(BIN)/mutmut run --max-children $$(nproc 2>/dev/null || echo 2); rc=$$?; \
	  $(BIN)/python tools/mutation_report.py --seconds $$(( $$(date +%s) - start )) && exit $$rc

lab: setup ## open the notebooks in JupyterLab with the project kernel
	$(BIN)/jupyter lab notebooks

# The trained models as a web UI and a REST API (lib.serve), on 127.0.0.1 only; after make repro.
serve: setup ## the app: web UI at http://127.0.0.1:8000/ui/, REST API docs at /docs
	$(BIN)/python -m lib.serve

# bench/scale.py (8-12 min on 2 cores): seconds per image and peak memory of prepare, training,
# predict and Grad-CAM on phantom sets of 1k-8k images and 128-512 px; runs even when bench.run
# misses a budget.
bench: setup ## print the speed budgets as measured figures, then the cost curve (bench/scale.py)
	$(BIN)/python -m bench.run; rc=$$?; $(BIN)/python -m bench.scale || rc=1; exit $$rc

# The cross-machine check, after make repro: reruns the whole study in a temp copy of the checkout
# with oneDNN capped at AVX2 kernels (ONEDNN_MAX_CPU_ISA), as another CPU would train it, and
# checks that every claim of reports/metrics/claims.json is the same and no metric drifts outside
# its seed-aware interval; writes reports/crosscheck.md and .json. Takes about as long as make
# repro (the capped ISA is 25-40 % slower); python -m tools.crosscheck --help for the options.
crosscheck: setup ## rerun the study with other oneDNN kernels (AVX2), compare its claims
	$(BIN)/python -m tools.crosscheck

# `dvc exp show` prints every number of every metrics file (some 3,700 columns). make exps keeps
# the settings usually varied (seeds, variants, epochs and learning rates of both training
# stages) and the outcome: the best configuration, each configuration's mean validation and test
# macro-F1 over its seeds, the headline saliency method with its pointing game and the shortcut
# rate on the best model (explain.json's target checks). A column is kept whether or not DVC
# prefixes it with its file (it does when two files share a key). EXPS_ARGS passes more options,
# e.g. make exps EXPS_ARGS='--only-changed' or EXPS_ARGS='-A --csv'.
EXPS_KEEP := 'Experiment$$' '(.*:)?(train_seeds|variants)$$' \
	'(.*:)?train_scratch\.(epochs|learning_rate)$$' \
	'(.*:)?train_transfer\.phase[12]_(epochs|learning_rate)$$' \
	'(reports/metrics/evaluate\.json:)?best_configuration$$' \
	'(.*:)?configurations\.[^.]+\.(val|test)_macro_f1\.mean$$' \
	'(.*:)?headline_method$$' \
	'(.*:)?target\.checks\.(headline_pointing_game|shortcut_rate)\.measured$$'
EXPS_ARGS ?=
exps: setup ## dvc exp show with only the params and metrics that matter (about 23 columns)
	$(BIN)/dvc exp show --no-pager --md --drop '.*' $(addprefix --keep ,$(EXPS_KEEP)) $(EXPS_ARGS)

# The guided arm's sweep, after make repro: lam (0, 0.03, 0.3, 1) and the share of masked images
# (10 %, 1 %) as queued DVC experiments, each rerunning train_guided@scratch_batchnorm in its own
# temporary workspace (about 2.5 min each on 2 cores, one at a time: two workers would share the
# same two cores); then one csv and one curve in reports/sweeps/ (tools/guide_sweep.py).
# dvc queue status does not list a worker that is starting up, so the loop waits on the queue's
# Queued and Running rows, not on the workers.
sweep-guide: setup ## queue the guided arm's lam and mask-share sweep as DVC experiments, run, collect
	$(BIN)/python -m tools.guide_sweep queue --dvc $(BIN)/dvc
	$(BIN)/dvc queue start -j 1
	until ! $(BIN)/dvc queue status | grep -qE 'Queued|Running'; do sleep 20; done
	$(BIN)/python -m tools.guide_sweep collect --dvc $(BIN)/dvc

# The seeds of one training stage as parallel queued DVC experiments, after make repro: one
# `dvc exp run --queue -S 'train_seeds=[<seed>]' $(SWEEP_STAGE)` per seed of train_seeds, then
# `dvc queue start -j <workers>` with each worker's threads capped (OMP_NUM_THREADS,
# TF_NUM_INTRAOP_THREADS, TF_NUM_INTEROP_THREADS), a wait on the queue's rows and the per-seed
# validation metrics in reports/sweeps/ (tools/seed_sweep.py; `python -m tools.seed_sweep models`
# copies the models out of the cache). Workers: one per core at one thread each (measured on 2
# cores, 3 seeds: 254 s as 2 x 1 thread, 310 s as 1 x 2). The thread count changes the numbers:
# SWEEP_ARGS='--jobs 1 --threads 2' (threads = cores) gives dvc repro's to the last digit.
SWEEP_STAGE ?= train_scratch@batchnorm
SWEEP_ARGS ?=
sweep: setup ## the seeds of SWEEP_STAGE as parallel queued DVC experiments, then collect
	$(BIN)/python -m tools.seed_sweep run --stage '$(SWEEP_STAGE)' --dvc $(BIN)/dvc $(SWEEP_ARGS)

FEEDBACK ?= feedback
import-feedback: setup ## add the app's feedback (FEEDBACK=folder) to data/raw/Training, with provenance
	$(BIN)/python -m lib.data.ingest feedback $(FEEDBACK) --out data/raw

lint: setup ## ruff
	$(BIN)/ruff check .

lock: ## re-resolve requirements.in into requirements.txt (and environment.yml)
	rm -rf /tmp/brain-mri-lock && $(PYTHON) -m venv /tmp/brain-mri-lock
	/tmp/brain-mri-lock/bin/pip install -q -r requirements.in
	{ echo "# Fully pinned lock for Python 3.11 (linux x86_64), generated by 'make lock' from requirements.in."; \
	  echo "# Do not edit by hand."; \
	  /tmp/brain-mri-lock/bin/pip freeze --all | grep -v -E "^pip==" | LC_ALL=C sort -f; } > requirements.txt
	$(PYTHON) tools/write_environment.py requirements.txt environment.yml

clean: ## remove .venv, the pytest cache and mutants/
	rm -rf $(VENV) .pytest_cache mutants
