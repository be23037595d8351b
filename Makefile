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

run: seed
	@echo "Serving on http://$(HOST):$(PORT)/  (API docs: /api/docs, admin: /admin/)"
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
