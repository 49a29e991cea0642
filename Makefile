# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench postgres clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[openai,anthropic]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,postgres,openai,anthropic,gemini,redis,frameworks,bench,dashboard,sqlcipher,otel,parquet]'
	touch $@ $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(BIN)/python examples/quickstart.py

# Starts the local PostgreSQL server if it is installed but stopped (the tests need it in CI).
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null \
	  || { command -v pg_ctlcluster >/dev/null && ls /etc/postgresql >/dev/null 2>&1 \
	       && pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n1) main start \
	       ; } \
	  || echo "PostgreSQL is not running on 127.0.0.1:5432; its tests will be skipped (outside CI)"

test: $(VENV)/.installed-dev postgres
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/writer.py
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/report.py
	$(BIN)/python benchmarks/dashboard.py
	$(BIN)/python benchmarks/scrub.py
	$(BIN)/python benchmarks/export.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache obsdeco.db obsdeco-demo.db
