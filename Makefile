# Two commands do all set-up on a fresh machine (Python >= 3.11 with venv):
#   make demo   - simulated water devices + a broker + the agent, live
#   make test   - lint, types and the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test venv lint types pytest bench schema clean deb

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

# Workers: tests mostly wait on real brokers, serial lines and subprocesses, so three on a
# 2-core machine cut the wall time to about a third (PYTEST_WORKERS=0 runs them in-process).
PYTEST_WORKERS ?= 3
pytest: venv
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadgroup

test: lint types pytest

bench: venv
	$(BIN)/python bench/bench_e2e.py

schema: venv
	$(BIN)/swm-edge schema --output config/schema.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Debian package (debhelper; see debian/rules and docs/operations.md): builds in a copy of the
# tree (tracked and new files, minus what .gitignore ignores) under DEB_BUILD_DIR, so neither
# this tree nor its parent folder get build files, and puts the .deb into DIST.
# Needs debhelper, dpkg-dev and python3-venv (.ci/run installs them), and the package index.
DIST ?= dist
DEB_BUILD_DIR ?= build/deb
deb:
	rm -rf $(DEB_BUILD_DIR)
	mkdir -p $(DEB_BUILD_DIR)/src $(DIST)
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  git ls-files -z --cached --others --exclude-standard | \
	    xargs -0 sh -c 'for f; do if [ -f "$$f" ] || [ -L "$$f" ]; then printf "%s\0" "$$f"; fi; done' sh | \
	    tar --null -T - -cf - | tar -C $(DEB_BUILD_DIR)/src -xf -; \
	else \
	  tar --exclude-vcs --exclude-vcs-ignores --exclude=./build --exclude=./dist -cf - . | \
	    tar -C $(DEB_BUILD_DIR)/src -xf -; \
	fi
	cd $(DEB_BUILD_DIR)/src && dpkg-buildpackage -b -us -uc
	cp $(DEB_BUILD_DIR)/swm-edge_*.deb $(DIST)/
	@ls -l $(DIST)/swm-edge_*.deb
