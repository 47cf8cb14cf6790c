# Two commands matter: `make demo` and `make test`. Everything a test needs is installed here.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU wheel first: a bare `torch` requirement would otherwise pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# verl without its dependencies, for the verl test only (see the verl-site target).
VERL_SITE := build/verl-site

.PHONY: install install-test demo test lint typecheck check-machine bench clean prometheus verl-site

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed-demo: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[service,trainer]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[service,trainer,trl,grafana,dev]'
	touch $@

install: $(VENV)/.installed-demo

install-test: $(VENV)/.installed-test prometheus $(VERL_SITE)/.installed

# verl for tests/distributed/test_verl.py, without its dependencies (CUDA torch, Ray's extras, another
# transformers) and outside .venv: only that test's rank processes put it on their path.
$(VERL_SITE)/.installed: | $(VENV)/.installed-test
	$(PIP) install -q --no-deps --target $(VERL_SITE) verl==0.9.1 tensordict==0.10.0 omegaconf==2.4.0 \
	  antlr4-python3-runtime==4.9.3 ray==2.60.0 msgpack==1.2.4 protobuf==7.36.2 jsonschema==4.26.0 attrs==26.1.0 \
	  referencing==0.37.0 rpds-py==2026.9.1 jsonschema-specifications==2025.9.1 pyvers==0.2.3 cloudpickle==3.1.3 \
	  codetiming==1.4.0 peft==0.21.2
	touch $@

verl-site: $(VERL_SITE)/.installed

# Debian's prometheus package gives `prometheus` and `promtool` for the integration and rule tests;
# Debian's chromium is the browser of the UI tests (Playwright launches it by path, never downloads one).
prometheus:
	@missing=""; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v amtool >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian's packages:$$missing (promtool and prometheus for the rule and scrape tests,"; \
	  echo "  amtool to check dashboards/alertmanager.yml, chromium for the browser tests in tests/ui)"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: install
	$(VENV)/bin/sapo-monitor demo

# What `make test` needs beyond Python, checked first so a missing piece is one clear message, not
# dozens of failures: root (or passwordless sudo) for apt when promtool/amtool/chromium are missing, and a
# PostgreSQL the tests can reach (default postgresql://postgres@127.0.0.1:5432/test, trust auth, a
# `test` database; SAPO_MONITOR_TEST_PG points them at another).
TEST_PG ?= $(or $(SAPO_MONITOR_TEST_PG),postgresql://postgres@127.0.0.1:5432/test)
check-machine:
	@{ command -v promtool >/dev/null && command -v amtool >/dev/null && test -x /usr/bin/chromium; } || \
	  [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null || { \
	  echo "make test: promtool, amtool or /usr/bin/chromium is missing and installing them (apt-get) needs root;"; \
	  echo "  run as root, or install Debian's prometheus, prometheus-alertmanager and chromium packages first."; exit 2; }
	@$(PYTHON) -c "import socket,sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); socket.create_connection((p.hostname or '127.0.0.1', p.port or 5432), 3).close()" "$(TEST_PG)" 2>/dev/null || { \
	  echo "make test: no PostgreSQL at $(TEST_PG)."; \
	  echo "  The storage tests run on SQLite and PostgreSQL: start one on 127.0.0.1:5432 with trust auth for"; \
	  echo "  user postgres and a database named test (e.g. apt-get install postgresql; createdb test), or set"; \
	  echo "  SAPO_MONITOR_TEST_PG=postgresql://USER@HOST:PORT/DB (a role that may CREATE DATABASE)."; exit 2; }

# mypy over the client and the service (config: [tool.mypy] in pyproject.toml). They import as
# sapo_monitor.client / .service but live in client/ and service/, so they are linked into one tree.
typecheck: install-test
	@rm -rf build/typecheck/sapo_monitor && mkdir -p build/typecheck/sapo_monitor
	@ln -s ../../../sapo_monitor/__init__.py build/typecheck/sapo_monitor/__init__.py
	@ln -s ../../../client build/typecheck/sapo_monitor/client
	@ln -s ../../../service build/typecheck/sapo_monitor/service
	cd build/typecheck && ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml -p sapo_monitor.client -p sapo_monitor.service

# Most tests wait on servers, subprocesses and timers rather than on the CPU: up to 4 pytest-xdist
# workers (one per core), each test file on one worker so its module fixtures are built once.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
# pip and apt side by side (-j2): on a fresh machine they are most of the set-up time.
test: check-machine
	@$(MAKE) --no-print-directory -j2 install-test
	$(VENV)/bin/ruff check .
	$(MAKE) typecheck
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

lint: install-test
	$(VENV)/bin/ruff check .

bench: install-test
	$(PY) bench/client_overhead.py
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
