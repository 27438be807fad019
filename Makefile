# Two commands for a fresh machine (see README.md): `make repro` runs the pipeline, `make test` the tests.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup repro test
# setup: what the pipeline needs; the tests' extras (pytest, Ray, psycopg, statsmodels: ~20 s more) only for `make test`.
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

repro: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

# The report tests open the HTML in headless Chromium: installed with apt where missing and root or sudo allow;
# elsewhere install_browser.sh says so and those tests are skipped.
test: $(VENV)/.installed-test
	bash tests/install_browser.sh
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest
