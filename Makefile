# `make test` and `make demo` set up everything they need on a fresh machine: a .venv from the
# exact pins in requirements.lock, and WordNet 3.0 from Debian's packages (when root and missing).
# A second run installs nothing: the venv is rebuilt only when the pins or pyproject.toml change.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
WORDNET_PACKAGES := wordnet-base wordnet-sense-index
PYTEST_ARGS ?= -q

# As root, tests run in a private network namespace with only loopback: nothing can leave the machine.
ISOLATE := $(shell [ "$$(id -u)" = 0 ] && command -v ip >/dev/null && unshare --net true 2>/dev/null \
             && echo "unshare --net -- bash -c 'ip link set lo up && exec \"\$$@\"' isolated")

.PHONY: install wordnet test demo clean

install: $(INSTALLED)

$(INSTALLED): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

wordnet:
	@if [ -f /usr/share/wordnet/index.sense ] || [ -n "$${WORDNET_DIR:-}" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing WordNet 3.0 (Debian: $(WORDNET_PACKAGES))"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q $(WORDNET_PACKAGES) >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null && apt-get install -y -q $(WORDNET_PACKAGES) >/dev/null; }; \
	else \
	  echo "WordNet 3.0 not found: 'sudo apt-get install $(WORDNET_PACKAGES)' or set WORDNET_DIR" >&2; \
	fi

test: install wordnet
	$(ISOLATE) $(PY) -m pytest $(PYTEST_ARGS)

demo: install wordnet
	$(PY) pipelines/demo.py $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
