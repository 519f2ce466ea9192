# The two set-up commands of the README. Each works on a fresh machine with only
# Python 3 and make: the virtual environment and the packages are made on demand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-test

# Debian packages the end-to-end tests drive as real peers (and openssl, which makes
# their test certificates; ssh and sshpass drive the SSH console): binary -> package.
SYSTEM_TOOLS := telnet:telnet nc:netcat-openbsd socat:socat openssl:openssl \
                ssh:openssh-client sshpass:sshpass
# Packages whose programs live off PATH: file pattern -> package. PostgreSQL's server
# (initdb, pg_ctl) is in /usr/lib/postgresql/<version>/bin; the storify tests start
# their own throwaway server with it (storify.testing.TemporaryPostgres).
SYSTEM_FILES := /usr/lib/postgresql/*/bin/pg_ctl:postgresql
# Peers only the benchmarks use (benchmarks/proxy.py compares the proxy with HAProxy, a
# C relay that splices; Debian installs it in /usr/sbin): `make bench` adds them.
BENCH_FILES := /usr/sbin/haproxy:haproxy

.PHONY: demo test lint typecheck pytest peer-poorconn system-tools bench clean

demo: $(STAMP)
	$(BIN)/storify serve --demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

# Our suite (~400 s on a quiet 2-core machine) with poorconn's (peer-poorconn) running
# beside it: that one spends its ~280 s asleep in its own delays (~10 s of CPU in all),
# so it barely loads the machine and costs make test no time. Its report is printed
# after ours; either failing fails.
pytest: $(STAMP) system-tools
	@log=$$(mktemp); start=$$(date +%s); \
	echo "peer-poorconn runs in the background (its report follows this suite's)"; \
	$(BIN)/python tests/peers/run_poorconn_suite.py >$$log 2>&1 & peer=$$!; \
	$(BIN)/python -m pytest $(PYTEST_ARGS); ours=$$?; \
	echo "pytest done after $$(( $$(date +%s) - start )) s; waiting for peer-poorconn"; \
	wait $$peer; theirs=$$?; cat $$log; rm -f $$log; \
	echo "pytest exit $$ours, peer-poorconn exit $$theirs, $$(( $$(date +%s) - start )) s"; \
	[ $$ours -eq 0 ] && [ $$theirs -eq 0 ]

# poorconn 0.2.1's own, unmodified test suite, run against sockwork.compat.poorconn
# (pip downloads the sdist once; see the script). Its own pytest process: the suite
# maps the name poorconn and binds fixed ports.
peer-poorconn: $(STAMP)
	$(BIN)/python tests/peers/run_poorconn_suite.py

# Every benchmark script, then one table of figures and targets (benchmarks/run.py).
# QUICK=1: a short smoke run of each (figures not comparable). ONLY="proxy frames": some.
bench: SYSTEM_FILES += $(BENCH_FILES)
bench: $(STAMP) system-tools
	$(BIN)/python benchmarks/run.py $(if $(QUICK),--quick) $(if $(ONLY),--only $(ONLY))

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Installs the missing peers with apt-get (as root, or through sudo).
system-tools:
	@missing=""; \
	for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	for pair in $(SYSTEM_FILES); do \
	  ls $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null || exit 1; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
