"""A real gunicorn with several workers on the test database (PostgreSQL) and Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.conf import settings

from brokers.conf import conf
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
SUITE_REDIS = "suite"  # redis_url default of gunicorn_server: the suite's own REDIS_URL


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _test_database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def _env(redis_url: str | None, extra: dict | None = None) -> dict:
    """The environment of a server or command on the test database; no REDIS_URL -> the in-process cache."""
    env = {**os.environ, "DATABASE_URL": _test_database_url(), "DEBUG": "1",
           "RATE_LIMIT_ORDERS": conf.RATE_LIMIT_ORDERS, **(extra or {})}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def manage(*args: str, redis_url: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`manage.py <args>` in its own process, on the test database (and Redis when given)."""
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=_env(redis_url),
                          capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


@dataclass
class GunicornServer:
    base: str  # http://127.0.0.1:<port>
    log: Path
    process: subprocess.Popen

    def booted_workers(self) -> int:
        """How many workers the master has booted so far (a restarted worker counts again)."""
        return self.log.read_text(errors="replace").count("Booting worker with pid")


@pytest.fixture
def gunicorn_server(transactional_db):
    """Starts gunicorn on demand against the same test database: start(redis_url=..., workers=..., env=...).

    redis_url: the suite's REDIS_URL by default, a test's own Redis, or None for the in-process cache.
    """
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL), as in the second CI run")
    started: list[tuple[GunicornServer, object]] = []

    def start(*, redis_url: str | None = SUITE_REDIS, workers: int = 4, env: dict | None = None) -> GunicornServer:
        if redis_url == SUITE_REDIS:
            redis_url = settings.REDIS_URL
            if not redis_url:
                pytest.skip("needs Redis (REDIS_URL), as in the second CI run")
        port = _free_port()
        log_path = ROOT / "var" / f"gunicorn-test-{port}.log"
        log = open(log_path, "w")
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "config.wsgi:application", "-w", str(workers),
                                 "-b", f"127.0.0.1:{port}", "--timeout", "60"],
                                cwd=ROOT, env=_env(redis_url, env), stdout=log, stderr=subprocess.STDOUT)
        server = GunicornServer(base=f"http://127.0.0.1:{port}", log=log_path, process=proc)
        started.append((server, log))
        deadline = time.time() + 60
        while True:
            try:
                requests.get(server.base + "/api/equity/orders", timeout=2)
                break
            except requests.RequestException:
                if proc.poll() is not None or time.time() > deadline:
                    proc.kill()
                    raise RuntimeError(f"gunicorn did not start; see {log_path}") from None
                time.sleep(0.3)
        return server

    yield start
    for server, log in started:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
        log.close()


@pytest.fixture
def start_gunicorn(gunicorn_server):
    """start(redis_url=None|url, env=...) -> base URL; redis_url None runs the workers on the in-process cache."""
    def start(*, redis_url: str | None = None, env: dict | None = None) -> str:
        return gunicorn_server(redis_url=redis_url, env=env).base

    return start


@pytest.fixture
def gunicorn(gunicorn_server):
    """Starts `gunicorn -w 4` against the same test database and Redis; yields its base URL."""
    return gunicorn_server().base
