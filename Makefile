# Self-documenting: every target with a '## ' comment is listed by `make help`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
MANAGE := $(PY) manage.py

.DEFAULT_GOAL := help
.PHONY: help install run test lint fmt typecheck migrate web worker beat up down check-migrations pytest

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is needed (set PYTHON=...)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP) ## Create the virtualenv and install the pinned dependencies (if changed)

run: install ## Run the whole pipeline live on embedded defaults: emulator replaying real data, paper bots, web, worker, beat, streams
	$(MANAGE) run_platform --demo

test: install lint typecheck check-migrations pytest ## Everything CI checks: lint, types, migrations, tests

pytest: install ## Run the test suite only (real Postgres and Redis)
	DJANGO_ENV=test $(PY) -m pytest

lint: install ## ruff lint and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

fmt: install ## Format and autofix with ruff
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

typecheck: install ## mypy with the Django, DRF and Celery stubs
	$(PY) -m mypy .

check-migrations: install ## Fail if models changed without a migration
	$(MANAGE) makemigrations --check --dry-run

migrate: install ## Apply database migrations
	$(MANAGE) migrate

web: install ## Development web server on :8000
	$(MANAGE) runserver

worker: install ## Celery worker on every queue
	$(PY) -m celery -A config worker -Q ingest,signals,execution,monitor,default -l INFO

beat: install ## Celery beat (database scheduler)
	$(PY) -m celery -A config beat -l INFO --pidfile=

up: ## docker compose: postgres, redis, web, worker, beat
	docker compose up --build

down: ## Stop the docker compose stack
	docker compose down
