# Two commands matter: `make demo` and `make test`. Everything a test needs is installed here.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU wheel first: a bare `torch` requirement would otherwise pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: install install-test demo test lint bench clean prometheus

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

install-test: $(VENV)/.installed-test prometheus

# Debian's prometheus package gives `prometheus` and `promtool` for the integration and rule tests;
# Debian's chromium is the browser of the UI tests (Playwright launches it by path, never downloads one).
prometheus:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus package (promtool, prometheus)"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
	@command -v amtool >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus-alertmanager package (amtool checks dashboards/alertmanager.yml)"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >/dev/null; }
	@test -x /usr/bin/chromium || { \
	  echo "installing Debian's chromium package (the browser tests in tests/ui drive it through Playwright)"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: install
	$(VENV)/bin/sapo-monitor demo

test: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

lint: install-test
	$(VENV)/bin/ruff check .

bench: install-test
	$(PY) bench/client_overhead.py
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
