# opsdesk: `make run` serves the console, `make test` runs the whole suite. Both set up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# Two workers (pytest-xdist): the suite talks to real servers and waits on them more than it computes.
PYTEST_ARGS ?= -n 2
# Playwright is for the admin's browser test only, which drives Debian's Chromium: installed where
# that Chromium is (.ci/run installs it first), left out elsewhere (the browser test is then skipped).
TEST_LOCK ?= $(if $(wildcard /usr/bin/chromium),requirements-browser.lock,requirements-test.lock)
# Client headers for mysqlclient, and the dump tools the backup engines run.
SYSTEM_PACKAGES := pkg-config libmariadb-dev mariadb-client postgresql-client zstd

.PHONY: setup run test lint lock system-deps migrate staff clean-venv

setup: $(VENV)/.installed migrate

# The web server plus what makes jobs run: a Celery worker when a broker is configured, and the
# scheduler (beat) in every case. Ctrl-C stops them all (ops_project/run.py).
run: setup staff
	@echo "opsdesk on http://127.0.0.1:$(PORT)/admin/"
	$(PY) -m ops_project.run --port $(PORT)

test: $(VENV)/.installed-$(TEST_LOCK) migrate lint
	$(PY) -m pytest $(PYTEST_ARGS)

# Lint (ruff, configured in pyproject.toml) and models without their migration: both fail the build.
lint: $(VENV)/.installed-$(TEST_LOCK)
	$(PY) -m ruff check .
	$(PY) manage.py makemigrations --check --dry-run -v 0

system-deps:
	@if pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing $(SYSTEM_PACKAGES) with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); \
	else \
		echo "mysqlclient needs the MariaDB client headers and pkg-config. Install them, then re-run make:"; \
		echo "    sudo apt-get install -y $(SYSTEM_PACKAGES)"; \
		echo "(macOS: brew install pkg-config mariadb-connector-c)"; \
		exit 1; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# From the hashed lock files (README, "Dependencies"): the versions the suite passed with, and pip
# refuses any file whose hash differs from the one recorded.
$(VENV)/.installed: requirements.lock | system-deps $(VENV)/bin/python
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	touch $@

# One stamp per lock file: Chromium installed after a first `make test` still brings Playwright.
$(VENV)/.installed-%.lock: %.lock requirements.lock | system-deps $(VENV)/bin/python
	$(PY) -m pip install -q --require-hashes -r $*.lock
	touch $(VENV)/.installed $@

# Re-resolve the lock files from requirements*.txt (newest versions their ranges allow), with uv in a
# throw-away virtualenv. `make lock UPGRADE=` keeps the pinned versions where they still fit.
UPGRADE ?= --upgrade
LOCK_VENV := $(or $(TMPDIR),/tmp)/opsdesk-lock-venv
lock:
	test -x $(LOCK_VENV)/bin/uv || ($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q uv)
	$(LOCK_VENV)/bin/uv pip compile -q $(UPGRADE) --generate-hashes --universal --python-version 3.11 requirements.txt -o requirements.lock
	$(LOCK_VENV)/bin/uv pip compile -q $(UPGRADE) --generate-hashes --universal --python-version 3.11 requirements-test.txt -o requirements-test.lock
	$(LOCK_VENV)/bin/uv pip compile -q $(UPGRADE) --generate-hashes --universal --python-version 3.11 requirements-browser.txt -o requirements-browser.lock

migrate:
	$(PY) manage.py migrate --noinput -v 0

staff:
	$(PY) manage.py ensure_staff

clean-venv:
	rm -rf $(VENV)
