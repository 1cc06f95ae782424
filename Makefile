# Set-up and entry points. Every target creates the virtual environment when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test docs browser clean

# The library declares ranges (pyproject.toml); this environment pins the releases it is tested on.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/transferkit demo

# The report page is tested in Debian's Chromium; installed here when missing (needs root and apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium >/dev/null; } || echo "chromium could not be installed: the browser test is skipped"

test: $(STAMP) browser
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# The Python API reference, from the docstrings (mkdocstrings); any warning fails it.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet --site-dir site

clean:
	rm -rf $(VENV) site
