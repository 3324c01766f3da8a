# Every target sets itself up on a fresh machine and skips finished set-up on the next run.
#   make demo    the main job          make test    lint + the test suite
#   make bench   benchmarks            make data    fetch verified data
#   make clean   remove the virtual environment
# Users with a GPU: make TORCH_SPEC='torch>=2.2' ...

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
TP := $(VENV)/bin/topoprune
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint bench data fashion-mnist venv clean FORCE

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch first, from the pinned local CPU wheel, so pip never resolves a CUDA build by itself.
# The recipe runs every time but touches .torch only when TORCH_SPEC changed.
$(VENV)/.torch: FORCE | $(PY)
	@if [ "$$(cat $@ 2>/dev/null)" != "$(TORCH_SPEC)" ]; then \
		$(PY) -m pip install "$(TORCH_SPEC)" && echo "$(TORCH_SPEC)" > $@; fi

$(INSTALLED): pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(INSTALLED)

# Fashion-MNIST comes from a Debian package; installed when we are root with apt, else skipped
# (the tests that need it then skip and say why).
fashion-mnist:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || \
		echo "note: could not install dataset-fashion-mnist; Fashion-MNIST tests will skip"; fi

data: $(INSTALLED) fashion-mnist
	$(TP) data fetch mnist
	@if [ -d /usr/share/datasets/fashion-mnist ]; then $(TP) data fetch fashion-mnist; fi

lint: $(INSTALLED)
	$(VENV)/bin/ruff check topoprune tests benchmarks studies
	$(VENV)/bin/ruff format --check topoprune tests benchmarks studies

test: data lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The main job: LeNet-300-100 on MNIST, trained dense, then pruned by Dynamic Network Surgery with
# the settings the pruning-table study found (results/pruning_table), then analysed. Rerunning
# resumes (or skips) finished runs.
DEMO_DIR ?= runs/demo
DEMO_RUN = $(TP) prune --model lenet300 --dataset mnist --seed 0
demo: data
	$(TP) data list
	$(DEMO_RUN) --method dense --epochs 30 --lr 0.05 --schedule cosine --out $(DEMO_DIR)/dense \
		$(if $(wildcard $(DEMO_DIR)/dense/checkpoint.pt),--resume)
	$(DEMO_RUN) --method dns --init $(DEMO_DIR)/dense/checkpoint.pt --dense-epochs 0 --epochs 30 \
		--lr 0.01 --c 5.5,4.5,2.5 --schedule cosine --snapshot-epochs --out $(DEMO_DIR)/dns \
		$(if $(wildcard $(DEMO_DIR)/dns/checkpoint.pt),--resume)
	$(TP) analyze $(DEMO_DIR)/dns/checkpoint.pt --boot 500 --seed 0 --figures figures/demo \
		--csv $(DEMO_DIR)

# igraph is a peer measured by the benchmarks only (not a dependency): installed when it can be.
bench: $(INSTALLED)
	@$(PY) -c "import igraph" 2>/dev/null || $(PY) -m pip install --quiet igraph || \
		echo "note: igraph not installable; its comparison is skipped"
	$(PY) -m benchmarks.degrees_vgg16 --out results/benchmarks/degrees_vgg16.json
	$(PY) -m benchmarks.powerlaw_fit --out results/benchmarks/powerlaw_fit.json
	$(PY) -m benchmarks.masked_step --out results/benchmarks/masked_step.json
	$(PY) -m benchmarks.second_order --time-limit-s 240 --out results/benchmarks/second_order.json
	$(PY) -m benchmarks.sparse_training_step --out results/benchmarks/sparse_training_step.json
	$(PY) -m benchmarks.llm_degrees --out results/benchmarks/llm_degrees.json
	@# times the structured study's models: run `topoprune study run structured` first
	$(PY) -m benchmarks.structured_speed --out results/benchmarks/structured_speed.json
	@# about 40 minutes: the progressive study three times (1 and 2 local workers, a 2-CPU Ray)
	$(PY) -m benchmarks.study_executors --out results/benchmarks/study_executors.json
	$(PY) -m benchmarks.atlas_grid_cost --out results/benchmarks/atlas_grid_cost.json

FORCE:

clean:
	rm -rf $(VENV)
