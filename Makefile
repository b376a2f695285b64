# Two commands do everything on a fresh machine: `make parity` and `make test`.
# Both create the virtualenv on first use; `make venv` is quick when nothing changed.
PYTHON ?= python3
VENV ?= .venv
EXTRA ?= cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(EXTRA)
PYTEST_ARGS ?=

.PHONY: venv parity test coverage clean

venv: $(STAMP)

# Re-install only when the package metadata changes (sources are installed editable).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRA)]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

parity: venv
	$(BIN)/parity check

test: venv
	$(BIN)/python -m pytest -n auto $(PYTEST_ARGS)

# Line and branch coverage of both model packages driven by the parity tests alone, every case.
coverage: venv
	$(BIN)/python -m coverage erase
	$(BIN)/python -m coverage run -m pytest -p no:xdist -q -k parity --parity-cases all $(PYTEST_ARGS)
	$(BIN)/python -m coverage report

clean:
	rm -rf $(VENV) parity-report .pytest_cache .coverage
