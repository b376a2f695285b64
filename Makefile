# Two commands do everything on a fresh machine: `make parity` and `make test` (the gate tier;
# `make test-full` runs every test on every case, as CI does).
# Both create the virtualenv on first use; `make venv` is quick when nothing changed.
PYTHON ?= python3
VENV ?= .venv
EXTRA ?= cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(EXTRA)
PYTEST_ARGS ?=

.PHONY: venv parity test test-full durations coverage clean gpu-check wheels docs docs-figures

venv: $(STAMP)

# Re-install only when the package metadata changes (sources are installed editable). The docs
# extra comes along: the test suite builds the documentation site strictly.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRA),docs]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

parity: venv
	$(BIN)/parity check

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The full tier: the tests marked `full` too. `PARITY_CASES=all` runs every parity test on the
# extended cases as well (long on 2 cores: meant for runners that share the work).
# Shards: `make test-full PYTEST_ARGS="--splits 4 --group 2"` runs the second of four groups of
# about equal time (pytest-split, from the durations in .test_durations).
PARITY_CASES ?= default
test-full: venv
	$(BIN)/python -m pytest --tier full --parity-no-cache --parity-cases $(PARITY_CASES) $(PYTEST_ARGS)

# Re-measure .test_durations (what the shards are balanced on): one full-tier run, cold as CI runs it.
durations: venv
	$(BIN)/python -m pytest --tier full --parity-no-cache --store-durations --durations-path .test_durations $(PYTEST_ARGS)

# Line and branch coverage of both model packages driven by the parity tests alone, every case.
coverage: venv
	$(BIN)/python -m coverage erase
	$(BIN)/python -m coverage run -m pytest -n 0 -q -k parity --parity-cases all $(PYTEST_ARGS)
	$(BIN)/python -m coverage report

# The device check for a GPU machine with torch + CUDA and no TensorFlow and no network: the working
# tree on PYTHONPATH (no virtualenv), missing packages from the wheels in .whl/ (`make wheels`).
gpu-check:
	$(PYTHON) scripts/gpu_check.py $(GPU_CHECK_ARGS)

# Wheels of the few packages such a machine lacks, for Python 3.12 on x86-64 (run where there is a network).
WHEEL_PYTHON ?= 3.12
wheels:
	$(PYTHON) -m pip download --disable-pip-version-check --only-binary=:all: --no-deps -d .whl \
	  --python-version $(WHEEL_PYTHON) --implementation cp --platform manylinux2014_x86_64 \
	  pytest-regressions pytest-datadir pyyaml

# The documentation site, from docs/ and mkdocs.yml, into site/ (broken links or includes fail it).
docs: venv
	$(BIN)/python -m mkdocs build --strict --site-dir site

# The figures in the docs, regenerated bit for bit from the shipped fixture (faults from the catalogue).
docs-figures: venv
	$(BIN)/python scripts/docs_figures.py

clean:
	rm -rf $(VENV) parity-report .pytest_cache .coverage site
