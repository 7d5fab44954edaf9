# Two entry points for a fresh machine: `make demo` and `make test`. Both create and reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

.PHONY: install bwrap demo test lint bench
install: $(STAMP)

# The sandbox needs bubblewrap: installed here when we can (root with apt-get), else the one command to run.
bwrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else echo "the sandbox needs bubblewrap; install it with: sudo apt-get install bubblewrap" >&2; exit 1; fi; }

demo: $(STAMP) bwrap
	$(BIN)/discovery run --target lpo --env CartPole-v1 --test-env Acrobot-v1 --profile quick --candidates 6

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=25

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/rl_throughput.py
