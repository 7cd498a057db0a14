# Two commands: `make demo` runs the main job, `make test` runs the tests.
# Both (re)create .venv and install the project into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TYPES := .typecheck

.PHONY: demo test bench lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/selaras demo

test: lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/pytest bench -q --benchmark-only -s

lint: $(STAMP) typecheck
	$(BIN)/ruff check engine server client bench tests

# mypy sees the folders as the installed packages (selaras.engine ...) through a tree of
# links, so every selaras.* import resolves to its real types (tests/test_types.py).
typecheck: $(STAMP)
	mkdir -p $(TYPES)/selaras
	for p in engine server client bench; do ln -sfn ../../$$p $(TYPES)/selaras/$$p; done
	MYPYPATH=$(TYPES) $(BIN)/mypy --strict -p selaras.engine -p selaras.server -p selaras.client

clean:
	rm -rf $(VENV) $(TYPES) build *.egg-info
