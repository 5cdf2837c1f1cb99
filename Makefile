# Every target creates the virtual environment it needs; a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean postgresql

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tenure demo

# The distributed tests start a throwaway PostgreSQL of their own; a fresh Debian machine
# (CI: root) gets the server package here. Once it is installed, a server that does not
# start fails those tests instead of skipping them.
INITDB = command -v initdb || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null
postgresql:
	@if ! { $(INITDB); } >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing the Debian package postgresql (the distributed tests need initdb)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else \
	    echo "PostgreSQL (initdb) is missing and cannot be installed here (needs root and apt-get): the distributed tests will be skipped" >&2; \
	  fi; \
	fi

test: $(STAMP) postgresql
	$(BIN)/ruff check tenure tests benchmarks examples
	$(BIN)/mypy
	if { $(INITDB); } >/dev/null 2>&1; then export TENURE_REQUIRE_POSTGRES=1; fi; \
	$(BIN)/pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check tenure tests benchmarks examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache
