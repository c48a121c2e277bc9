# Two entry points on a fresh machine (CPU is enough):
#   make segment   segment photos (default: 8 BSDS500 val images, DINOv2-small attention) into outputs/
#   make test      lint, compile-check the CUDA sources, run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
IMAGES ?= ../shared/data/bsds500/images/val
MODEL ?= ../shared/models/dinov2-small
LIMIT ?= 8

.PHONY: install segment test bench

$(VENV)/.installed: requirements/ci.txt setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/ci.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

segment: $(VENV)/.installed
	$(VENV)/bin/diffcut-gpu segment $(IMAGES) --out outputs --backbone vit --model-path $(MODEL) --limit $(LIMIT)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	bash .ci/compile_cuda.sh
	$(PY) -m pytest -q tests

bench: $(VENV)/.installed
	$(VENV)/bin/diffcut-gpu bench
