"""A real gunicorn with several workers on the test database (PostgreSQL) and Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture
def start_gunicorn(transactional_db):
    """Starts `gunicorn -w 4` against the test database; `redis_url=None` gives every worker its own
    in-process cache (the embedded setup). Returns the base URL; every server is stopped at teardown."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL, as in the second CI run")
    started = []

    def start(*, redis_url: str | None = settings.REDIS_URL, workers: int = 4, env: dict | None = None) -> str:
        port = _free_port()
        run_env = {**os.environ, "DATABASE_URL": _database_url(), "DEBUG": "1",
                   "RATE_LIMIT_ORDERS": settings.RATE_LIMIT_ORDERS, **(env or {})}
        run_env.pop("DJANGO_SETTINGS_MODULE", None)
        run_env.pop("REDIS_URL", None)
        if redis_url:
            run_env["REDIS_URL"] = redis_url
        log = open(ROOT / "var" / f"gunicorn-test-{port}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "config.wsgi:application", "-w", str(workers),
                                 "-b", f"127.0.0.1:{port}", "--timeout", "60"],
                                cwd=ROOT, env=run_env, stdout=log, stderr=subprocess.STDOUT)
        started.append((proc, log))
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                requests.get(base + "/api/equity/orders", timeout=2)
                return base
            except requests.RequestException:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"gunicorn did not start; see {log.name}")
                time.sleep(0.3)

    yield start
    for proc, log in started:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def gunicorn(start_gunicorn):
    """gunicorn -w 4 on the PostgreSQL test database and Redis (REDIS_URL); yields its base URL."""
    if not settings.REDIS_URL:
        pytest.skip("needs Redis (REDIS_URL), as in the second CI run")
    return start_gunicorn()


def manage(*args: str, redis_url: str | None = None) -> subprocess.CompletedProcess:
    """Runs a management command in another process against the test database."""
    env = {**os.environ, "DATABASE_URL": _database_url(), "DEBUG": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
