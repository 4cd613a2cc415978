# The two README commands: `make test` and `make demo`. Each (re)creates .venv from a clean clone
# and installs every package under packages/ and services/ in editable mode, pinned by constraints.txt.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DISTS := $(sort $(dir $(wildcard packages/*/pyproject.toml services/*/pyproject.toml)))
STAMP := $(VENV)/.installed
DEMO_MODEL ?= qwen3-tiny-skilldistill-demo

.PHONY: install test demo lint typecheck bench protos gpu-install clean

$(STAMP): constraints.txt pyproject.toml $(wildcard packages/*/pyproject.toml services/*/pyproject.toml)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=25"
	$(PY) -m pip install --quiet --progress-bar off -c constraints.txt "torch==2.13.0" -e ".[dev]" $(addprefix -e ,$(DISTS))
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) pipelines/distill.py --registry-model $(DEMO_MODEL)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy packages/*/src services/*/src && $(VENV)/bin/mypy pipelines/distill.py

bench: $(STAMP)
	set -e; for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f; done

protos: $(STAMP)
	$(PY) -m skilltagger.protos_gen

# GPU machines: a CUDA torch and vllm, without the CPU pins for torch.
gpu-install:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[dev]" $(addprefix -e ,$(filter-out packages/distill/,$(DISTS))) -e "packages/distill[gpu]"

clean:
	rm -rf $(VENV) mlruns mlflow.db .pytest_cache
