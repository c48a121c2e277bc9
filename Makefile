# Two entry points on a fresh machine (CPU is enough):
#   make segment     segment photos (default: 8 BSDS500 val images, DINOv2-small attention) into outputs/
#   make test        lint, compile-check the CUDA sources, run the whole test suite (what CI runs)
#   make test-fast   the test suite without the tests marked slow (the edit-test loop)
# Models and data are read from ../shared (see README.md, "Models and data"); IMAGES= and MODEL= override.
VENV ?= .venv
PY := $(VENV)/bin/python
IMAGES ?= ../shared/data/bsds500/images/val
MODEL ?= ../shared/models/dinov2-small
LIMIT ?= 8

.PHONY: install segment check-inputs test test-fast bench

$(VENV)/.installed: requirements/ci.txt setup.py pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/ci.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

# Before anything is installed: say which input is missing and how to provide it.
check-inputs:
	@test -f "$(MODEL)/config.json" || { echo "make segment: no model at MODEL=$(MODEL) (expected a transformers checkpoint folder with config.json). Create ../shared/models/dinov2-small as README.md (Models and data) describes, or pass MODEL=DIR." >&2; exit 2; }
	@test -d "$(IMAGES)" || { echo "make segment: no image folder at IMAGES=$(IMAGES). Create ../shared/data/bsds500/images/val as README.md (Models and data) describes, or pass IMAGES=DIR with your photos." >&2; exit 2; }

segment: check-inputs $(VENV)/.installed
	$(VENV)/bin/diffcut-gpu segment $(IMAGES) --out outputs --backbone vit --model-path $(MODEL) --limit $(LIMIT)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	bash .ci/compile_cuda.sh
	$(PY) -m pytest -q tests

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" tests

bench: $(VENV)/.installed
	$(VENV)/bin/diffcut-gpu bench
