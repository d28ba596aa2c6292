# The two commands in the README (`make run`, `make test`) set up a fresh clone by
# themselves: a virtual environment in .venv, PyTorch (CPU build where there is no GPU),
# then this package with its dev extra.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run serve test lint format bench demo clean

$(STAMP): pyproject.toml scripts/install_torch.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) scripts/install_torch.py
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: setup ## the main job: the TUI on the bundled demo model
	$(VENV)/bin/slm-tui $(ARGS)

serve: setup ## the OpenAI-compatible server on the bundled demo model (127.0.0.1:8000)
	$(VENV)/bin/slm-serve $(ARGS)

test: setup ## the test suite (a few minutes on 2 cores)
	$(PY) -m pytest -q $(ARGS)

lint: setup ## ruff (lint + format), mypy (pyproject [tool.mypy]), the torch-free import contracts
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench: setup ## every benchmark in bench/, one table, JSON in bench/results/
	$(PY) bench/run_all.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .import_linter_cache build *.egg-info
