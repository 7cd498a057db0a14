# Two commands: `make demo` runs the main job, `make test` runs the tests.
# Both (re)create .venv and install the project into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/selaras demo

test: $(STAMP)
	$(BIN)/ruff check engine server client bench tests
	$(BIN)/mypy --strict engine server client
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/pytest bench -q --benchmark-only -s

lint: $(STAMP)
	$(BIN)/ruff check engine server client bench tests
	$(BIN)/mypy --strict engine server client

clean:
	rm -rf $(VENV) build *.egg-info
