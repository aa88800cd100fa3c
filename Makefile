# Two entry points: `make run` (the embedded default job) and `make test`.
# Both are idempotent: they install the Debian data package and the virtual environment when missing.
VENV      ?= .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
DATA_DIR  := /usr/share/datasets/fashion-mnist
# ARGS is set on the command line only (make test ARGS=...): an ARGS in the environment changes nothing.
ARGS      :=

.PHONY: run test test-all setup data bench bench-quick theory clean-venv

run: setup
	$(VENV)/bin/deliberate run $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow" $(ARGS)

bench: setup
	$(PY) -m bench benchmark $(ARGS)

bench-quick: setup
	$(PY) -m bench benchmark --quick $(ARGS)

theory: setup
	$(VENV)/bin/deliberate theory $(ARGS)

setup: data $(STAMP)

data:
	@if [ ! -f $(DATA_DIR)/t10k-labels-idx1-ubyte.gz ]; then \
	  echo "installing Debian package dataset-fashion-mnist"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
