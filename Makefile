# Every target creates the virtual environment it needs; a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-cluster test bench lint clean postgresql debian-tools package test-floors

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tenure demo

# A planner delegating researchers to two workers over a throwaway local PostgreSQL,
# revoked from the command line, then exported and verified (examples/distributed/).
demo-cluster: $(STAMP)
	bash examples/distributed/demo.sh

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

# The report test renders HTML in a real headless Chromium, the proof interop test checks
# proofs with Go's golang.org/x/mod/sumdb, and the clock-skew tests preload libfaketime into
# worker processes; a fresh Debian machine (CI: root) gets them here. Where they cannot be
# installed those tests are skipped, each with its reason.
DEBIAN_TOOLS = chromium:chromium go:golang-go /usr/share/gocode/src/golang.org/x/mod/sumdb:golang-golang-x-mod-dev faketime:faketime
debian-tools:
	@missing=""; for pair in $(DEBIAN_TOOLS); do \
	  probe=$${pair%%:*}; pkg=$${pair#*:}; \
	  if ! command -v $$probe >/dev/null 2>&1 && [ ! -e $$probe ]; then missing="$$missing $$pkg"; fi; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing the Debian packages$$missing (report browser test, Go proof interop, clock skew)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } \
	      || echo "could not install$$missing: the tests that need them will be skipped" >&2; \
	  else \
	    echo "missing$$missing (needs root and apt-get): the tests that need them will be skipped" >&2; \
	  fi; \
	fi

test: $(STAMP) postgresql debian-tools
	$(BIN)/ruff check tenure tests benchmarks examples
	$(BIN)/mypy
	if { $(INITDB); } >/dev/null 2>&1; then export TENURE_REQUIRE_POSTGRES=1; fi; \
	$(BIN)/pytest -q -p no:cacheprovider --cov --cov-report=term --cov-fail-under=90
	$(MAKE) --no-print-directory package

# The distributions a user installs: built from a clean tree and checked as PyPI would.
package: $(STAMP)
	rm -rf build/ dist/ tenure.egg-info
	$(BIN)/python -m build --outdir dist/ >/dev/null
	$(BIN)/twine check --strict dist/*

# The declared dependency floors (`name>=X` in pyproject.toml) are versions the code works
# with: install exactly those in a separate venv, with the test tools but not the framework
# extras (each framework needs newer pydantic/anyio than the core; their tests are left out
# and named in the summary), and run the suite there.
FLOORS := .venv-floors
test-floors: postgresql debian-tools
	test -d $(FLOORS) || $(PYTHON) -m venv $(FLOORS)
	$(FLOORS)/bin/pip install --quiet --upgrade pip
	$(PYTHON) .ci/floors.py > $(FLOORS)/floors.txt
	$(FLOORS)/bin/pip install --quiet -c $(FLOORS)/floors.txt -e '.[test]'
	if { $(INITDB); } >/dev/null 2>&1; then export TENURE_REQUIRE_POSTGRES=1; fi; \
	$(FLOORS)/bin/pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(if $(PROFILE),--profile $(PROFILE))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check tenure tests benchmarks examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(FLOORS) runs .pytest_cache .mypy_cache build dist tenure.egg-info
