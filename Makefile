# Two commands: `make run` (demo admin + task cluster) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1:8000

.PHONY: run test lint check bench clean lock

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Installs come from the hashed locks only; requirements*.txt are the ranges people edit (then `make lock`).
$(VENV)/.run-deps: requirements.lock | $(VENV)/bin/python
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	touch $@

$(VENV)/.test-deps: requirements-test.lock | $(VENV)/bin/python
	$(PY) -m pip install -q --require-hashes -r requirements-test.lock
	touch $@ $(VENV)/.run-deps

# Regenerate both locks from requirements*.txt with pip-tools in a throwaway venv. Keeps current pins
# where the ranges allow; `make lock LOCK_ARGS=--upgrade` moves everything to the newest allowed.
# The test lock is constrained by the runtime lock, so tests run the exact versions production installs.
LOCK_VENV := var/lock-venv
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links $(LOCK_ARGS)
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q "pip-tools>=7.4,<8"
	$(PIP_COMPILE) --output-file requirements.lock requirements.txt
	$(PIP_COMPILE) --constraint requirements.lock --output-file requirements-test.lock requirements-test.txt
	rm -rf $(LOCK_VENV)

# The last step runs runserver and qcluster under one supervisor (orderflow/devenv.py): one Ctrl-C stops both
# quietly and make exits 0.  The cluster logs warnings and errors only; QCLUSTER_LOG_LEVEL=INFO shows every task.
run: $(VENV)/.run-deps
	$(PY) -m orderflow.devenv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py load_demo
	$(PY) manage.py create_demo_admin
	@echo "Admin: http://$(HOST)/admin/  (Ctrl-C stops the web server and the task cluster)"
	@$(PY) -m orderflow.devenv serve $(HOST)

test: $(VENV)/.test-deps
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.test-deps
	$(PY) -m ruff check .

check: $(VENV)/.test-deps
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

bench: $(VENV)/.test-deps
	$(PY) bench/run.py
	$(PY) bench/pipeline.py
	$(PY) bench/latency.py

clean:
	rm -rf $(VENV) var .pytest_cache
