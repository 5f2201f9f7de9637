# Two entry points for a fresh machine with only python3, make and git:
#   make demo   - start a local TLS server and reconnect through the pool
#   make test   - the whole test suite (default loop and uvloop, TLS 1.2 and 1.3)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench bench-quick docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall when the project's metadata changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,demo]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m aiotlspool demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check aiotlspool

typecheck: $(STAMP)
	$(PY) -m mypy --strict aiotlspool

check: lint typecheck test

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,demo,bench]'
	touch $(BENCH_STAMP)

# Benchmarks write JSON, a Markdown table and PNG charts to benchmarks/results/.
bench: $(BENCH_STAMP)
	$(PY) -m benchmarks

bench-quick: $(BENCH_STAMP)
	$(PY) -m benchmarks --quick

DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,demo,docs]'
	touch $(DOCS_STAMP)

# The documentation site (mkdocs.yml, docs/, the docstrings) into site/; any warning fails.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build dist *.egg-info site
