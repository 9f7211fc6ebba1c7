# jobcompd — the two commands an operator or a developer needs:
#   make run    set up everything, start a local Tansu broker and the daemon on a demo spool
#   make test   set up everything, run the whole test suite
#   make install   (root) jobcompd as a service: docs/install.md; make uninstall removes it
# All work on a fresh Debian or RHEL-family machine (apt-get or dnf is detected).

SHELL := /bin/sh
VENV  ?= .venv
PY     = $(VENV)/bin/python
# A Python >= 3.11: python3.11 where the distribution ships it beside an older python3 (RHEL 8/9).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { command -v $$p; break; }; done)
# loadfile: each test module runs on one worker, so a module-scoped fixture (the systemd
# container of tests/test_systemd_service.py) is set up once. (loadgroup would be finer, but
# pytest 9.2 ignores the node id suffix it relies on: pytest-xdist issue #1386.)
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: all run test lint bench soak sysdeps venv clean hook install uninstall wheelhouse

all: test

# System packages: pkg-config, the libsystemd headers and a C compiler with the Python headers
# (systemd-python builds from source); socat and openssl for the TLS tests; the venv module
# and systemd-nspawn for the test that installs the unit under a real systemd.
sysdeps:
	@if pkg-config --exists libsystemd 2>/dev/null && command -v cc >/dev/null 2>&1 \
		&& command -v socat >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1 \
		&& command -v systemd-nspawn >/dev/null 2>&1 \
		&& /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		pkgs="pkg-config libsystemd-dev gcc python3-dev python3-venv socat openssl systemd-container"; \
		echo "installing $$pkgs (apt-get)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$pkgs >/dev/null \
		|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$pkgs >/dev/null; }; \
	elif command -v dnf >/dev/null 2>&1; then \
		pkgs="pkgconf-pkg-config systemd-devel gcc python3.11-devel socat openssl systemd-container"; \
		echo "installing $$pkgs (dnf)"; \
		dnf install -y -q $$pkgs; \
	else echo "install pkg-config, the libsystemd development headers, gcc, socat, openssl and systemd-nspawn, then run make again" >&2; exit 1; fi

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

# The long versions of the fault tests; their figures end up in soak-figures.txt.
soak: $(VENV)/.installed
	rm -f soak-figures.txt
	JOBCOMPD_SOAK=1 JOBCOMPD_FAULT_LOG=$(CURDIR)/soak-figures.txt $(PY) -m pytest $(PYTEST_ARGS) -rP tests/faults tests/test_fuzz.py tests/test_badinput.py
	cat soak-figures.txt

bench: $(VENV)/.installed
	$(PY) -m bench

# The compiled spool hook (optional): the same contract (jobcompd/spool/SPEC.md) as the shell
# hook jobcompd/hook/jobcompd-spool, in one process instead of six (README, "The compiled
# hook"). The tests build their own copy.
CC ?= cc
hook: .build/jobcompd-spool
.build/jobcompd-spool: jobcompd/hook/jobcompd-spool.c
	@mkdir -p .build
	$(CC) -O2 -Wall -Wextra -std=c11 -D_GNU_SOURCE -o $@ $<

# Install as a service (root): docs/install.md says what goes where. make install again
# upgrades beside the running version; DESTDIR= stages the files for a package; make
# wheelhouse + WHEELHOUSE=DIR install with no network.
PREFIX      ?= /opt/jobcompd
BINDIR      ?= /usr/local/bin
SYSCONFDIR  ?= /etc
UNITDIR     ?= /usr/local/lib/systemd/system
TMPFILESDIR ?= /usr/local/lib/tmpfiles.d
SLURM_USER  ?= slurm
INSTALL_VARS = PREFIX='$(PREFIX)' BINDIR='$(BINDIR)' SYSCONFDIR='$(SYSCONFDIR)' \
	UNITDIR='$(UNITDIR)' TMPFILESDIR='$(TMPFILESDIR)' SLURM_USER='$(SLURM_USER)' \
	DESTDIR='$(DESTDIR)' WHEELHOUSE='$(WHEELHOUSE)' INSTALL_PYTHON='$(INSTALL_PYTHON)' CC='$(CC)'

install:
	@$(INSTALL_VARS) sh systemd/install.sh install

uninstall:
	@$(INSTALL_VARS) sh systemd/install.sh uninstall

wheelhouse:
	@$(INSTALL_VARS) sh systemd/install.sh wheelhouse

clean:
	rm -rf $(VENV) .run build .build *.egg-info
