# The two README commands: `make test` and `make demo`. Each (re)creates .venv from a clean clone
# and installs every package under packages/ and services/ in editable mode, pinned by constraints.txt.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DISTS := $(sort $(dir $(wildcard packages/*/pyproject.toml services/*/pyproject.toml)))
STAMP := $(VENV)/.installed
DEMO_MODEL ?= qwen3-tiny-skilldistill-demo

.PHONY: install test demo compare lint typecheck bench bench-quick bench-table protos gpu-install gpu-check gpu-wheels clean

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

# The paper's arms (random/skill selection x plain/skill-aware SFT, plus the paper's weights) over three seeds
# on the demo's pool, profile and student (about an hour on 2 cores); results in runs/$(DEMO_MODEL)-compare/compare/.
compare: $(STAMP)
	$(PY) pipelines/distill.py --registry-model $(DEMO_MODEL)-compare --compare --seeds 0,1,2

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy packages/*/src services/*/src && $(VENV)/bin/mypy pipelines/distill.py docs/capture_compare.py

# Benchmarks (pytest-benchmark, benchmarks/bench_*.py; not collected by `make test`). Each run is saved
# under $(BENCH_STORAGE)/{full,quick} with the machine info, and compared with the last saved run of the
# same set: the comparison table is printed and the run fails when a benchmark's best round is slower than
# BENCH_FAIL allows (a loose default: the 2-core dev machine is shared; use e.g. min:20% on a quiet one).
# `make bench-table` rewrites the README's table from the last full run.
BENCH_STORAGE ?= .benchmarks
BENCH_FAIL ?= min:50%
BENCH_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
BENCH_PYTEST := $(BENCH_ENV) $(PY) -m pytest benchmarks -o python_files='bench_*.py' -p no:cacheprovider \
	--benchmark-enable --benchmark-autosave --benchmark-columns=min,median,max,rounds --benchmark-sort=fullname
define bench_run
	@set -e; store="$(BENCH_STORAGE)/$(1)"; compare=""; \
	if ls "$$store"/*/*.json >/dev/null 2>&1; then \
		compare="--benchmark-compare --benchmark-compare-fail=$(BENCH_FAIL)"; \
	else echo "(no saved $(1) run in $$store yet: this run is saved, the next one is compared with it)"; fi; \
	echo "$(BENCH_PYTEST) -m '$(2)' --benchmark-storage=file://$$store $$compare"; \
	$(BENCH_PYTEST) -m '$(2)' --benchmark-storage="file://$$store" $$compare
endef

bench: $(STAMP)
	$(call bench_run,full,not quick_only)

bench-quick: $(STAMP)
	$(call bench_run,quick,quick and not large)

bench-table: $(STAMP)
	$(PY) benchmarks/render_table.py --storage $(BENCH_STORAGE)/full --readme README.md

protos: $(STAMP)
	$(PY) -m skilltagger.protos_gen

# GPU machines: a CUDA torch and vllm, without the CPU pins for torch.
gpu-install:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[dev]" $(addprefix -e ,$(filter-out packages/distill/,$(DISTS))) -e "packages/distill[gpu]"

# The GPU check (benchmarks/gpu_check.py, README "GPU check"), on a GPU machine with no network: `make
# gpu-wheels` fetches here the wheels that machine lacks (benchmarks/gpu_wheels.txt) into .whl/; carried
# there, `make gpu-check` installs them into GPU_SITE and runs the check with the machine's CUDA python.
GPU_PYTHON ?= python3
GPU_SITE ?= /tmp/gpu-check-site
GPU_CHECK_ARGS ?=
gpu-wheels:
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl -r benchmarks/gpu_wheels.txt

gpu-check:
	if ls .whl/*.whl >/dev/null 2>&1; then $(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile \
		--upgrade --target $(GPU_SITE) .whl/*.whl; fi
	PYTHONPATH=$(GPU_SITE)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# The profiler's bento with the project's own distributions as wheels (infra/build_bento.py; the bento store
# is BENTOML_HOME, default ~/bentoml). BENTO_ARGS=--containerize also builds the image (needs Docker).
.PHONY: bento
bento: $(STAMP)
	$(PY) infra/build_bento.py $(BENTO_ARGS)

clean:
	rm -rf $(VENV) mlruns mlflow.db mlflow.db.lock .pytest_cache
