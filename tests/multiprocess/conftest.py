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


@pytest.fixture
def gunicorn(transactional_db):
    """Starts `gunicorn -w 4` against the same test database and Redis; yields its base URL."""
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip("needs PostgreSQL and Redis (DATABASE_URL and REDIS_URL), as in the second CI run")
    db = settings.DATABASES["default"]
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": settings.REDIS_URL, "DEBUG": "1",
           "RATE_LIMIT_ORDERS": settings.RATE_LIMIT_ORDERS}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log = open(ROOT / "var" / f"gunicorn-test-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "config.wsgi:application", "-w", "4",
                             "-b", f"127.0.0.1:{port}", "--timeout", "60"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            requests.get(base + "/api/equity/orders", timeout=2)
            break
        except requests.RequestException:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"gunicorn did not start; see {log.name}")
            time.sleep(0.3)
    try:
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
