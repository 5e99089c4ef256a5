PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install install-openl3 run worker test lint format clean

# Re-install when the project metadata changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,eval,milvus]"
	touch $(STAMP)

install: $(STAMP)

## The optional OpenL3 embedder: a CPU build of torch, then the extra (about 1.2 GB).
install-openl3: $(STAMP)
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev,eval,milvus,openl3]"

## Start the service on port 8000 (embedded PostgreSQL unless DATABASE_URL is set).
run: $(STAMP)
	$(BIN)/echoledger migrate
	$(BIN)/echoledger serve

## A standalone ingestion worker (production runs several, on any machines).
worker: $(STAMP)
	$(BIN)/echoledger worker

## The whole test suite (embedded PostgreSQL unless DATABASE_URL is set).
test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
