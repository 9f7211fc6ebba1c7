# jobcompd — the two commands an operator or a developer needs:
#   make run    set up everything, start a local Tansu broker and the daemon on a demo spool
#   make test   set up everything, run the whole test suite
# Both work on a fresh Debian or RHEL-family machine (apt-get or dnf is detected).

SHELL := /bin/sh
VENV  ?= .venv
PY     = $(VENV)/bin/python
# A Python >= 3.11: python3.11 where the distribution ships it beside an older python3 (RHEL 8/9).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { command -v $$p; break; }; done)
PYTEST_ARGS ?= -n 2

.PHONY: all run test lint bench soak sysdeps venv clean

all: test

# System packages systemd-python needs to build from source: pkg-config, the libsystemd
# headers and a C compiler with the Python headers.
sysdeps:
	@if pkg-config --exists libsystemd 2>/dev/null && command -v cc >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		echo "installing pkg-config libsystemd-dev gcc python3-dev (apt-get)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q pkg-config libsystemd-dev gcc python3-dev >/dev/null \
		|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pkg-config libsystemd-dev gcc python3-dev >/dev/null; }; \
	elif command -v dnf >/dev/null 2>&1; then \
		echo "installing pkgconf-pkg-config systemd-devel gcc python3.11-devel (dnf)"; \
		dnf install -y -q pkgconf-pkg-config systemd-devel gcc python3.11-devel; \
	else echo "install pkg-config and the libsystemd development headers, then run make again" >&2; exit 1; fi

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "no Python >= 3.11 found: install python3.11 (dnf) or python3 (apt-get)" >&2; exit 1; }
	$(MAKE) --no-print-directory sysdeps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) -m tests.demo

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed
	$(PY) -m bench

clean:
	rm -rf $(VENV) .run build *.egg-info
