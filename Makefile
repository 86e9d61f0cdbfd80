# `make demo` and `make test` set themselves up from nothing but Python 3.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The CPU build of torch; an unpinned torch pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: setup demo test soak lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(PY) examples/stdlib_docs.py
	$(PY) vectorize.py encode --table stdlib_docs --column doc --model minilm
	$(PY) vectorize.py search "parse a date from a string" --table stdlib_docs -k 5 --show name
	$(PY) vectorize.py search "compress data in memory" --table stdlib_docs -k 5 --show name

test: setup lint
	$(PY) -m pytest

# The reliability tests on tables ten times larger.
soak: setup
	VECTORIZE_SOAK=1 $(PY) -m pytest tests/test_reliability.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
