# Two entry points: `make demo` (set up, then run the main job on the generated toy data) and
# `make test` (set up, then run the test suite). Set-up happens on first use and is skipped in
# seconds afterwards; see tools/setup_env.sh.
VENV ?= .venv
PYTHON := $(abspath $(VENV))/bin/python
export PYTHON
export MMCLIM_VENV := $(abspath $(VENV))

DEMO_DIR ?= work_dirs/demo
# pytest-xdist processes: the suite is many short tests, each mostly Python, on 2-core machines;
# the slowest tests are listed at the end (the CI time budget: README, Results).
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?= --durations=15

.PHONY: setup test demo format

setup:
	bash tools/setup_env.sh

test: setup
	$(PYTHON) -m flake8 mmclim tools tests configs
	$(PYTHON) -m isort --check-only mmclim tools tests configs
	$(PYTHON) -m pytest tests -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

demo: setup
	bash tools/demo.sh $(DEMO_DIR)

format: setup
	$(PYTHON) -m isort mmclim tools tests configs
