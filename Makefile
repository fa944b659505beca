# Two commands on a fresh machine (each sets up .venv on first use):
#   make demo   cloud removal on a real Landsat 8 scene with the embedded model -> outputs/*.tif (COG)
#   make test   the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.geot2e-installed

.PHONY: demo test bench eval notebooks venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision pinned to the releases this machine kind provides locally (open_clip needs torchvision)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) examples/01_cloud_removal.py --out outputs

# OMP_NUM_THREADS=1: every thread (main and dask workers) runs torch with the same intra-op
# thread count, so numpy and dask runs are bit-identical (see docs/engine.md, "Determinism").
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider

# the notebooks top to bottom with the default model; executed copies and figures in outputs/notebooks
notebooks: $(STAMP)
	$(PY) scripts/run_notebooks.py

bench: $(STAMP)
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_engine.py

eval: $(STAMP)
	$(PY) benchmarks/eval_default.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
