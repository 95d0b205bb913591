# The two commands of the README: `make run` and `make test`. Everything else builds on them.
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
PYTHON ?= python3
export PATH := $(BIN):$(PATH)

.PHONY: run test lint install bench contract clean

run: install                          ## create the venv, install, and run the whole DAG
	dvc repro

test: install lint                    ## lint + the whole test suite
	pytest

lint: install
	ruff check .

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

bench: install                        ## wall time of each stage, the DAG, and no-op repro
	python bench/dag.py

contract: install                     ## draft a data contract from a file: make contract DATA=path
	python -m lifecycle.draft_contract $(DATA) --output contract.draft.yaml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
