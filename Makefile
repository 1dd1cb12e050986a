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

# TEST_WRAP runs pytest inside another command (.ci/run: `unshare -rn`, no network), after the
# install step, which needs the package index.
TEST_WRAP ?=
test: install
	$(TEST_WRAP) $(PY) -m pytest

# The main job end to end on Fashion-MNIST (1,000 training images): protect with UGE for an
# authorized cnn key (6 generator epochs, to keep the demo under 5 minutes) and print the Table-1
# result against plain hackers (UGE as measured: it does not separate even without distillation); then
# `keyed` with the grey-image key family (block key, the best configuration measured at the 1k tier,
# `block-fmnist-v2`), its Table-1 result, an audit (a plain retrain row plus the attacks) and the
# one-page report. The audit's seed 1 is table1's hacker seed: its clean and retrain rows are table1's
# cells, not trained again. Measured on 2026-12-03 the grey-image key did not separate yet; the verdict lines say
# what this run measured.
DEMO := runs/demo
LL := $(VENV)/bin/learnlock
BLOCK_KEY := --set family=block --set k=4 --set dims=4 --set classwise=true \
	--set step_size=0.0156862745 --set noise_steps=5 --set stop_error=0.01
demo: install fashion-mnist
	@echo "== 1/5 UGE (Ye & Wang 2024, paper preset) protects 1,000 Fashion-MNIST images for a cnn key ($$(date +%T))"
	$(LL) protect --method uge --preset paper --data fashion-mnist --per-class 100 \
	  --authorized cnn --key-seed 1234 --key-out $(DEMO)/key.safetensors \
	  --set encoder_resolution=32 --set epochs=6 --out $(DEMO)/published --overwrite
	@echo "== 2/5 who learns from UGE's data: the authorized network against hackers ($$(date +%T))"
	$(LL) table1 --published $(DEMO)/published --authorized $(DEMO)/key.safetensors \
	  --test-per-class 100 --hackers cnn:1,lenet:1 --distill "" --out $(DEMO)/table1 --cache $(DEMO)/cells
	@echo "== 3/5 keyed (grey-image block key, 32/255) protects the same images ($$(date +%T))"
	$(LL) protect --method keyed --data fashion-mnist --per-class 100 --authorized cnn --key-seed 1234 \
	  $(BLOCK_KEY) --key-out $(DEMO)/keyed.key.safetensors --out $(DEMO)/keyed --overwrite
	@echo "== 4/5 who learns from keyed's data, and what breaks it ($$(date +%T))"
	$(LL) table1 --published $(DEMO)/keyed --authorized $(DEMO)/keyed.key.safetensors \
	  --test-per-class 100 --hackers cnn:1,lenet:1 --distill cnn:1 --out $(DEMO)/table1-keyed \
	  --cache $(DEMO)/cells
	$(LL) audit $(DEMO)/keyed --authorized $(DEMO)/keyed.key.safetensors --test-per-class 100 --seeds 1 \
	  --attacks retrain,iss-jpeg,key-estimate --nets cnn --out $(DEMO)/audit --cache $(DEMO)/cells
	@echo "== 5/5 one page for the keyed data: verdict, images, who learns, what breaks it ($$(date +%T))"
	$(LL) report $(DEMO)/keyed $(DEMO)/table1-keyed $(DEMO)/audit --out $(DEMO)/report.html --originals fashion-mnist
	@echo "The verdict lines above say whether each protection separates (target: authorized >= 0.9,"
	@echo "every hacker <= 0.5). Open $(DEMO)/report.html in a browser."

bench: install fashion-mnist
	$(PY) bench/clean_baselines.py

clean:
	rm -rf $(VENV) runs .pytest_cache
