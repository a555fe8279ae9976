# The two commands the README promises: `make book` and `make test`.
# Both create .venv from requirements.txt on first use (Python 3.10+ on PATH as python3).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Where the CIFAR-10 loader looks first; .ci/run points it at the shared JPEG copy.
export BNBOOK_DATA ?= $(CURDIR)/data/cache
# Keep the two cores for the work, not for oversubscribed thread pools.
export PYTHONHASHSEED := 0

.PHONY: all book test unit notebooks bench clean help

help:
	@echo "make book   build the website into _build/html"
	@echo "make test   unit tests + every notebook under nbval"
	@echo "make bench  benchmark scripts (not tests)"

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo "Open file://$(CURDIR)/_build/html/index.html"

test: unit notebooks

unit: $(STAMP)
	$(PY) -m pytest -q tests

notebooks: $(STAMP)
	$(PY) -m pytest -q --nbval-lax --nbval-current-env chapters

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf _build .pytest_cache
