# Two commands do everything on a fresh machine with Python 3.11:  make repro  and  make test.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
KERNEL := brain-mri-study
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
export PYTHONHASHSEED := 0
export TF_CPP_MIN_LOG_LEVEL := 2
export MPLBACKEND := Agg

.PHONY: help setup data repro test test-fast mutation lab serve bench crosscheck report lint lock \
	phantom clean
help:
	@echo "make repro   set up .venv, make sure data/raw exists, run the whole study (dvc repro)"
	@echo "make test    set up .venv, run the whole test suite (unit, notebooks, real dvc repro)"
	@echo "make test-fast  unit tests only, for the edit loop (make test before you push)"
	@echo "make mutation   mutation testing of lib/stats.py, jsonio.py, splits.py, explain/scores.py"
	@echo "make lab     open the notebooks in JupyterLab with the project kernel"
	@echo "make serve   the app: web UI at http://127.0.0.1:8000/ui/, REST API docs at /docs"
	@echo "make bench   print the speed budgets as measured figures"
	@echo "make crosscheck  rerun the study with other oneDNN kernels (AVX2), compare its claims"
	@echo "make report  rebuild only the HTML report from existing outputs"
	@echo "make lint    ruff;  make lock  re-resolve requirements.in into requirements.txt"
	@echo "make data    make sure data/raw exists (DVC remote when configured, else the phantom)"
	@echo "make phantom regenerate data/raw from params.yaml's phantom: group (overwrites it)"
	@echo "make clean   remove .venv, the pytest cache and mutants/"

setup: $(STAMP)

# Pinned install, the project in editable mode, a named Jupyter kernel for papermill, and the
# nbstripout git filter so notebooks are committed without outputs. The kernel shows figures
# inline (the stages' MPLBACKEND=Agg would leave a Figure repr in the executed notebooks) and
# keeps TensorFlow's C++ log lines (benign tf.data graph notices) out of the rendered pages.
$(STAMP): requirements.txt pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || \
	  { echo "error: $(PYTHON) is not Python 3.11; run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) \
	  --display-name "Python 3.11 (brain-mri-study)" \
	  --env MPLBACKEND module://matplotlib_inline.backend_inline --env TF_CPP_MIN_LOG_LEVEL 3 >/dev/null
	-git rev-parse --git-dir >/dev/null 2>&1 && $(BIN)/nbstripout --install --attributes .gitattributes
	touch $(STAMP)

# data/raw comes from the DVC remote when one is configured, else the deterministic phantom is
# generated; either way data.dvc says whether the bytes are the committed ones.
data: setup
	@if [ -d data/raw ]; then echo "data/raw present"; \
	elif [ -n "$$($(BIN)/dvc remote list)" ]; then $(BIN)/dvc pull data.dvc; \
	else $(BIN)/python -m lib.data.phantom --params params.yaml --out data/raw; fi
	@$(BIN)/dvc status data.dvc | grep -q "modified:" && \
	  echo "warning: data/raw differs from data.dvc (your own data? run 'dvc add data/raw' and commit data.dvc)" || true

phantom: setup
	$(BIN)/python -m lib.data.phantom --params params.yaml --out data/raw --overwrite

repro: data
	$(BIN)/dvc repro

report: setup
	$(BIN)/dvc repro --single-item report

# Two pytest workers share the cores: each TensorFlow (and every stage the pipeline test runs)
# gets half of them, instead of both oversubscribing all (measured: 6:10 -> 5:51 on 2 cores).
TEST_THREADS := $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n / 2 > 0 ? n / 2 : 1 )))
test test-fast: export TF_NUM_INTRAOP_THREADS := $(TEST_THREADS)
test test-fast: export TF_NUM_INTEROP_THREADS := $(TEST_THREADS)

test: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile --nbval-lax --nbval-current-env --durations=8 \
	  tests notebooks

# The edit loop: the unit tests not marked slow (no real dvc repro, no notebooks), about 80 s on 2 cores.
test-fast: setup
	$(BIN)/python -m pytest -n 2 -m "not slow" -q tests

# Mutation testing, not part of make test: mutmut (config: [tool.mutmut] in pyproject.toml)
# mutates the functions of lib/stats.py, lib/jsonio.py, lib/splits.py and lib/explain/scores.py
# in a fresh copy under mutants/ and runs the fast unit tests that reach each mutated function,
# one worker per core, one TensorFlow thread each; then the summary and every surviving mutant.
mutation: export TF_NUM_INTRAOP_THREADS := 1
mutation: export TF_NUM_INTEROP_THREADS := 1
mutation: setup
	rm -rf mutants
	@start=$$(date +%s); $(BIN)/mutmut run --max-children $$(nproc 2>/dev/null || echo 2); rc=$$?; \
	  $(BIN)/python tools/mutation_report.py --seconds $$(( $$(date +%s) - start )) && exit $$rc

lab: setup
	$(BIN)/jupyter lab notebooks

# The trained models as a web UI and a REST API (lib.serve), on 127.0.0.1 only; after make repro.
serve: setup
	$(BIN)/python -m lib.serve

bench: setup
	$(BIN)/python -m bench.run

# The cross-machine check, after make repro: reruns the whole study in a temp copy of the checkout
# with oneDNN capped at AVX2 kernels (ONEDNN_MAX_CPU_ISA), as another CPU would train it, and
# checks that every claim of reports/metrics/claims.json is the same and no metric drifts outside
# its seed-aware interval; writes reports/crosscheck.md and .json. Takes about as long as make
# repro (the capped ISA is 25-40 % slower); python -m tools.crosscheck --help for the options.
crosscheck: setup
	$(BIN)/python -m tools.crosscheck

lint: setup
	$(BIN)/ruff check .

lock:
	rm -rf /tmp/brain-mri-lock && $(PYTHON) -m venv /tmp/brain-mri-lock
	/tmp/brain-mri-lock/bin/pip install -q -r requirements.in
	{ echo "# Fully pinned lock for Python 3.11 (linux x86_64), generated by 'make lock' from requirements.in."; \
	  echo "# Do not edit by hand."; \
	  /tmp/brain-mri-lock/bin/pip freeze --all | grep -v -E "^pip==" | LC_ALL=C sort -f; } > requirements.txt
	$(PYTHON) tools/write_environment.py requirements.txt environment.yml

clean:
	rm -rf $(VENV) .pytest_cache mutants
