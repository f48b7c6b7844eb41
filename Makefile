# NeedleTrack: `make demo` and `make test` work on a fresh clone; everything they need is installed from here.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
BOARDS := esp32s3 picow
OUT ?= out

.PHONY: all venv demo test lint typecheck typecheck-firmware bench clean

all: test

$(STAMP): pyproject.toml tools/install_stubs.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[host,dev]"
	$(PY) tools/install_stubs.py
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(VENV)/bin/needletrack demo --out $(OUT)/demo

test: venv lint typecheck
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check host_tools firmware tests hil_tests bench tools

typecheck: venv typecheck-firmware
	$(VENV)/bin/mypy host_tools/needletrack

# The firmware is checked once per board against that board's MicroPython stubs, not CPython's typeshed.
typecheck-firmware: venv
	@for b in $(BOARDS); do \
	  echo "firmware against $$b stubs"; \
	  MYPYPATH=$(VENV)/stubs/$$b:firmware $(VENV)/bin/mypy --config-file tools/mypy-firmware.ini \
	    --custom-typeshed-dir $(VENV)/stubs/$$b firmware || exit 1; \
	done

bench: venv
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -m slow

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache
