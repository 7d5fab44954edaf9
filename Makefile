# Two entry points for a fresh machine: `make demo` and `make test`. Both create and reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

# What the demo needs: the package and its runtime dependencies (JAX, gymnax, FastAPI, ...), with pip's progress.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@echo "installing Discovery and its runtime dependencies into $(VENV) (a few minutes the first time)"
	$(BIN)/pip install --progress-bar on -e .
	touch $(STAMP)

# What the tests and benches need on top: pytest, ruff, playwright, ...
$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(DEV_STAMP)

.PHONY: install bwrap demo test lint bench
install: $(DEV_STAMP)

# The sandbox needs bubblewrap: installed here when we can (root with apt-get), else the one command to run.
bwrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else echo "the sandbox needs bubblewrap; install it with: sudo apt-get install bubblewrap" >&2; exit 1; fi; }

DEMO_SIZE ?= --profile quick --candidates 6
demo: $(STAMP) bwrap
	$(BIN)/discovery run --target lpo --env CartPole-v1 --test-env Acrobot-v1 $(DEMO_SIZE)

test: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=25

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

bench: $(DEV_STAMP)
	$(BIN)/python bench/rl_throughput.py
