# Two commands do all set-up on a fresh machine (Python >= 3.11 with venv):
#   make demo   - simulated water devices + a broker + the agent, live
#   make test   - lint, types and the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test venv lint types pytest bench schema clean

$(BIN)/swm-edge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,demo]'
	@touch $@

venv: $(BIN)/swm-edge

demo: venv
	$(BIN)/swm-edge demo $(if $(DURATION),--duration $(DURATION),)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: venv
	$(BIN)/mypy

pytest: venv
	$(BIN)/pytest -q

test: lint types pytest

bench: venv
	$(BIN)/python bench/bench_e2e.py

schema: venv
	$(BIN)/swm-edge schema --output config/schema.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
