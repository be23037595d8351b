# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install migrate seed lint clean bench bench-soak

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput

seed: migrate
	$(BIN)/python manage.py seed_demo

# The worker beside the web server (README "Order updates pushed"): the backend's worker runs the
# tasks, push_scheduler enqueues the periodic ones; both are stopped by PID when the server stops.
# TASKS_BACKEND=rq (with REDIS_URL) runs RQ's worker instead of the database queue's.
WORKER_ARGS = $(if $(filter rq,$(TASKS_BACKEND)),rqworker default --with-scheduler --job-class django_tasks_rq.backend.Job,db_worker)

run: seed
	@echo "Serving on http://$(HOST):$(PORT)/  (API docs: /api/docs, admin: /admin/); worker: manage.py $(firstword $(WORKER_ARGS))"
	@trap 'kill $$worker $$scheduler 2>/dev/null' EXIT INT TERM; \
	$(BIN)/python manage.py $(WORKER_ARGS) & worker=$$!; \
	$(BIN)/python manage.py push_scheduler & scheduler=$$!; \
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Load figures against a floor app (bench/README.md): PostgreSQL + Redis on localhost (started if
# down), its own databases bench_project and bench_floor, gunicorn started and stopped by PID.
# About 4 minutes; BENCH_ARGS passes options (e.g. --sweep, --profile, --workers N).
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Two minutes of mixed load on both servers, RSS of every worker every 10 s (about 3 minutes).
bench-soak: install
	$(BIN)/python bench/run.py --soak-only --soak 120 $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var
