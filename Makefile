# vlmflow: every target bootstraps .venv/ first (make install is idempotent and fast when nothing changed).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export OMP_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1

.PHONY: install test book figure toy-model data bench clean demo

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

test: install
	$(PY) -m pytest tests

demo: install
	$(VENV)/bin/vlmflow demo

toy-model: install
	$(VENV)/bin/vlmflow toy train --out data/toy_model

bench: install
	$(PY) benchmarks/sweep_speed.py

clean:
	rm -rf _build results
