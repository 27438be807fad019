# Two commands for a fresh machine (see README.md): `make repro` runs the pipeline, `make test` the tests.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup repro test
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

repro: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

# The report tests open the HTML in headless Chromium (Debian's package; needs root or sudo).
test: setup
	bash tests/install_browser.sh
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest
