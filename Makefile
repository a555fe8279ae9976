# The README's commands: `make test`, `make book`, then `make site-test`. They create .venv on
# first use (Python 3.10+ on PATH as python3); test and book fetch the data sets first
# (`make data`), site-test needs Debian's chromium.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Data locations (see README, "Data"). The notebooks run from chapters/, so relative paths
# given on the command line or in the environment are made absolute here.
DATA_PATH_VARS := BNBOOK_MIRROR BNBOOK_DATA BNBOOK_CIFAR10 BNBOOK_FASHION_MNIST
$(foreach v,$(DATA_PATH_VARS),$(if $($(v)),$(eval override export $(v) := $(abspath $($(v))))))
# Python's own hash randomisation off, so that set and dict orders repeat between runs.
export PYTHONHASHSEED := 0

.PHONY: help data test unit notebooks book vendor site-test lite-test student lab lab-install lab-test bench results gpu-results lock clean

help:
	@echo "make test   unit tests, then every notebook under nbval"
	@echo "make book   build the website into _build/html (reuses what make test executed)"
	@echo "make site-test  open every page of the built site in headless Chromium and check it"
	@echo "make student  the chapters without solutions and outputs, into _build/student"
	@echo "make data   put Fashion-MNIST and CIFAR-10 where the loaders look (done by test and book)"
	@echo "make vendor MathJax and the widget manager into _build/vendor (done by book)"
	@echo "make lab    open the Jupyter edition (_build/jupyter, made by make book) in JupyterLab"
	@echo "make lab-test  open every Jupyter and student edition in JupyterLab in headless Chromium and check it"
	@echo "make lite-test  open the browser edition (_build/html/lite, made by make book) in headless Chromium and check it"
	@echo "make bench  benchmark scripts (tables and ratios, not tests)"
	@echo "make results RESULT=data/results/<path>.json [DRY_RUN=1]"
	@echo "            print and rerun the command that stored result records"
	@echo "make gpu-results [GPU_ARGS=...]  on a machine with a GPU: verification and CIFAR-10"
	@echo "            timings into data/results/gpu (system python3, no .venv; README)"
	@echo "make lock   re-resolve requirements.txt into constraints.txt (maintainers)"

# The environment: requirements.txt names what the book uses, constraints.txt pins every
# package it pulls in, so a new release cannot change a reader's build.
$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade -c constraints.txt pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

data: $(STAMP)
	$(PY) -m bnbook.data

test: unit notebooks

unit: data
	$(PY) -m pytest -q tests

notebooks: data
	$(PY) -m pytest -q --nbval-lax --nbval-current-env chapters

# The chapters link their student edition with {download}, so the build copies it into the site;
# the site serves MathJax and the widget manager itself (html_static_path in _config.yml).
book: data student vendor
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	$(PY) -m bnbook.site.jupyter_edition --root . --executed _build/jupyter_execute/chapters --out _build/jupyter
	$(PY) -m bnbook.site.lite --out _build/html/lite
	@echo "Open file://$(CURDIR)/_build/html/index.html"

# Pinned npm tarballs, checksums checked, licences kept (python -m bnbook.site.vendor).
vendor: $(STAMP)
	$(PY) -m bnbook.site.vendor _build/vendor

# Every page of the built site in headless Chromium (bnbook.site.check); screenshots and the
# summary under _build/site-test. It tests the site make book built and does not rebuild it;
# first it checks that it catches a set of planted bugs (bnbook.site.selftest).
site-test: $(STAMP)
	@test -f _build/html/index.html || { echo "no website in _build/html: run make book first"; exit 2; }
	$(PY) -m bnbook.site.selftest --site _build/html --out _build/site-test/selftest
	$(PY) -m bnbook.site.check --site _build/html --out _build/site-test

# The browser edition in headless Chromium (bnbook.site.lite_check); screenshots under _build/lite-test.
lite-test: $(STAMP)
	@test -f _build/html/lite/repl/index.html || { echo "no Lite edition in _build/html/lite: run make book first"; exit 2; }
	$(PY) -m bnbook.site.lite_check --site _build/html --out _build/lite-test

student: $(STAMP)
	$(PY) -m bnbook.site.student chapters _build/student $(if $(wildcard _build/.jupyter_cache/global.db),--executed _build/.jupyter_cache)

# JupyterLab, pinned by constraints.txt, installed once. make lab opens the Jupyter edition
# (written by make book) at the root of the file browser; port and token come from the
# reader's Jupyter configuration; as root it adds --allow-root.
LAB_ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab-install: $(STAMP)
	@test -x $(VENV)/bin/jupyter-lab || $(PY) -m pip install --quiet -c constraints.txt jupyterlab

lab: lab-install
	@test -d _build/jupyter || { echo "no Jupyter edition in _build/jupyter: run make test, then make book"; exit 2; }
	$(VENV)/bin/jupyter lab $(LAB_ROOT_FLAG) --ServerApp.root_dir=_build/jupyter

lab-test: lab-install
	@test -d _build/jupyter || { echo "no Jupyter edition in _build/jupyter: run make test, then make book"; exit 2; }
	$(PY) -m bnbook.site.lab_check --lab-dir _build/jupyter --site _build/html --out _build/lab-test

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Rerun the command a stored result records (python -m bnbook.results rerun); DRY_RUN=1 prints it.
results: $(STAMP)
	@test -n "$(RESULT)" || { echo "usage: make results RESULT=data/results/<path>.json [DRY_RUN=1]"; exit 2; }
	$(PY) -m bnbook.results rerun $(abspath $(RESULT))$(if $(DRY_RUN), --dry-run)

# On a machine with a GPU (README, "On a GPU"): chapter 5 and 8's verification, chapter 7's
# epoch times and the 50-epoch fp32 pair, into data/results/gpu/. It runs with the machine's
# own python3 and PyTorch, not .venv (so it does not depend on the STAMP); GPU_ARGS are passed
# on (--commit HASH, --budget SECONDS, --out DIR, --device cpu --out DIR for the tiny test).
gpu-results:
	PYTHONPATH=code $(PYTHON) -m bnbook.experiments.gpu_results $(GPU_ARGS)

# Resolve the newest versions allowed by requirements.txt (plus JupyterLab for `make lab`)
# in a scratch environment and write every installed version to constraints.txt.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet -r requirements.txt jupyterlab
	( echo "# Every package of the book's environment, pinned (make lock writes this file)."; \
	  .lock-venv/bin/pip freeze --all --exclude-editable | sed -E 's/\+[a-z0-9.]+$$//' ) > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf _build .pytest_cache
