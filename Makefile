# Two commands on a fresh machine: `make demo` and `make test`.
# TORCH is installed first when the venv has no torch: the CPU wheel by default. On a GPU
# machine install your CUDA torch into .venv first (or pass TORCH=...); it is kept.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo bench clean fashion-mnist

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The demo's default dataset: Debian's bit-exact Fashion-MNIST where apt is available
# (otherwise learnlock downloads the official files into its cache on first use).
fashion-mnist:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ($$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
	    || echo "note: could not install dataset-fashion-mnist; learnlock will download Fashion-MNIST"; \
	fi

test: install
	$(PY) -m pytest

demo: install fashion-mnist
	$(VENV)/bin/learnlock evaluate --train fashion-mnist --per-class 200 --test-per-class 100 \
	  --nets cnn,lenet --seeds 0,1 --recipe cpu --epochs 8 --out runs/demo-clean

bench: install fashion-mnist
	$(PY) bench/clean_baselines.py

clean:
	rm -rf $(VENV) runs .pytest_cache
