# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv if it
# is missing and (re)install only when pyproject.toml or EXTRAS changed since the last
# install.
PYTHON ?= python3
# The extras to install; CI adds interp (SAELens, TransformerLens) so their tests run
EXTRAS ?= notebooks,dev
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: demo test install notebooks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tinycourse run --preset tiny
	@echo "Results: runs/tiny/  (see 'tinycourse status' with: $(BIN)/tinycourse status)"
	$(BIN)/tinycourse status --name tiny

test: $(STAMP)
	$(BIN)/python -m pytest -q

# .ipynb files for people who prefer them (JupyterLab opens the .py notebooks directly)
notebooks: $(STAMP)
	$(BIN)/jupytext --to ipynb notebooks/*.py

clean:
	rm -rf runs .pytest_cache
