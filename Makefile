# vlmflow: every target bootstraps .venv/ first (make install is idempotent and fast when nothing changed).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export OMP_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1

.PHONY: install lint test book figure browser toy-model data bench clean demo gpu-install gpu-check

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

# The linter first ([tool.ruff] in pyproject.toml: rules and why), then the tests; a lint error fails make test.
LINTED := lib tests benchmarks assignments diagnostics notebooks book/_ext
lint: install
	$(VENV)/bin/ruff check $(LINTED)

# Two workers, one per core; tests/conftest.py keeps each file on one worker and the book-build tests together.
test: install browser lint
	$(PY) -m pytest -n 2 --dist loadfile tests

# The book: every figure notebook executed with papermill (one process each, toy defaults, CPU), then the HTML
# (Jupyter Book 1, warnings as errors, internal links checked) into _build/html. See lib/vlmflow/book.py.
book: install
	$(VENV)/bin/vlmflow book build

# Rerun one figure with other parameters into its own folder, e.g.
#   make figure FIG=token_roles MODEL=llava-hf/llava-1.5-7b-hf DEVICE=cuda ARGS="--param n_images=20"
FIG    ?=
MODEL  ?= toy
DEVICE ?= cpu
ARGS   ?=
figure: install
	@test -n "$(FIG)" || { echo "usage: make figure FIG=NAME [MODEL=M] [DEVICE=cuda] [ARGS='--param k=v']"; $(VENV)/bin/vlmflow figure --list; exit 2; }
	$(VENV)/bin/vlmflow figure $(FIG) --model $(MODEL) --device $(DEVICE) $(ARGS)

# Headless Chromium for the book's browser tests (tests/book): Debian's package, installed when missing.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@test -x $(CHROMIUM) && echo "chromium: $$($(CHROMIUM) --version 2>/dev/null)"

demo: install
	$(VENV)/bin/vlmflow demo

toy-model: install
	$(VENV)/bin/vlmflow toy train --out data/toy_model

bench: install
	$(PY) benchmarks/sweep_speed.py

# The GPU path (benchmarks/README.md): a CUDA environment in .venv-gpu (PyPI's CUDA torch, requirements-gpu.txt), then
# benchmarks/gpu_check.py on it. Conda users: `make gpu-check GPU_PY=python` inside the environment.yml environment.
GPU_VENV := .venv-gpu
GPU_PY   ?= $(GPU_VENV)/bin/python
GPU_ARGS ?=
gpu-install: $(GPU_VENV)/.installed

$(GPU_VENV)/.installed: requirements.txt requirements-gpu.txt pyproject.toml
	@test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install -q --upgrade pip
	$(GPU_VENV)/bin/python -m pip install -q -r requirements-gpu.txt
	$(GPU_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	$(GPU_VENV)/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

gpu-check: $(if $(filter $(GPU_VENV)/bin/python,$(GPU_PY)),gpu-install)
	$(GPU_PY) benchmarks/gpu_check.py $(GPU_ARGS)

clean:
	rm -rf _build results book/figures/*.ipynb
