# Every target uses the project's own venv; `make install` creates it from nothing.
PY := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: install test lint typecheck schemas demo bench clean

.venv/bin/python:
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip

install: .venv/bin/python
	$(PY) -m pip install --quiet -e '.[dev]'

test:
	$(PY) -m pytest -q -n 2 -p no:cacheprovider

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

clean:
	rm -rf .reconciler .pytest_cache .mypy_cache .ruff_cache
