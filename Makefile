# Two commands: `make run` (demo admin + task cluster) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1:8000

.PHONY: run test lint check bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.run-deps: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.test-deps: requirements.txt requirements-test.txt | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@ $(VENV)/.run-deps

run: $(VENV)/.run-deps
	$(PY) -m orderflow.devenv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py load_demo
	$(PY) manage.py create_demo_admin
	@echo "Admin: http://$(HOST)/admin/  (Ctrl-C stops the web server and the task cluster)"
	@trap 'kill 0' INT TERM EXIT; \
	  $(PY) manage.py qcluster & \
	  $(PY) manage.py runserver $(HOST) --noreload; \
	  wait

test: $(VENV)/.test-deps
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.test-deps
	$(PY) -m ruff check .

check: $(VENV)/.test-deps
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

bench: $(VENV)/.test-deps
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) var .pytest_cache
