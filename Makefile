# The two commands of the README, and the set-up both run first.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test demo lint bench clean

setup:
	@./deploy/setup.sh

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/csms demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) -m bench.tree

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache *.egg-info
