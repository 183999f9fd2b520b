# One-command workflows. Each target creates .venv on first use, so a fresh clone needs only Python >= 3.11.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The whole product on embedded PostgreSQL, Kafka (Tansu) and a simulated tenant.
run: $(STAMP)
	$(VENV)/bin/entra-sync up --state-dir .state

## Every test. The test session starts its own broker and (unless DATABASE_URL is set) PostgreSQL.
test: $(STAMP)
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(VENV)/bin/entra-sync bench resync --users 100000
	$(VENV)/bin/entra-sync bench webhook --seconds 20 --rate 2000
	$(VENV)/bin/entra-sync bench freshness --changes 300 --rate 20
	$(VENV)/bin/entra-sync bench preview --users 100000 --runs 5
	$(VENV)/bin/entra-sync bench console --end-users 100000
	$(VENV)/bin/entra-sync bench fleet --tenants 500 --users 200

clean:
	rm -rf .state .pytest_cache .mypy_cache .ruff_cache
