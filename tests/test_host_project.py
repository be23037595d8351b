"""The apps embedded in a host product (tests/host_project/), installed from the wheel into a fresh venv.

Once per session: the checkout is copied out, its wheel built (`pip wheel --no-deps`), a venv made
outside the checkout and the wheel installed there with the host's own needs (the versions pinned
by requirements.txt). Then the host project, copied next to the venv, is run in subprocesses with
its own working directory: its `config` is the host's, and the demo site's is not importable.
On the PostgreSQL + Redis leg the host uses the suite's server with a database of its own
(`<suite database>_host`) and the suite's Redis.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
HOST_PROJECT = CHECKOUT / "tests" / "host_project"
APPS = ("audit", "brokers", "equity", "risk")
# What the host installs beside the wheel: its own database driver, cache backend and test runner.
HOST_NEEDS = ["psycopg[binary]", "django-redis", "dj-database-url", "pytest", "pytest-django"]
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "var", "__pycache__", "*.pyc", "build", "*.egg-info",
                                    "host.sqlite3")


def _run(args, *, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _must(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, f"{done.args}\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
    return done


def _clean_env() -> dict:
    """The machine's environment without anything that points into the checkout or at the demo site."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV", "DATABASE_URL", "REDIS_URL")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the checkout (the build leaves nothing in the work tree)."""
    source = tmp_path_factory.mktemp("source") / "equity-orders"
    shutil.copytree(CHECKOUT, source, ignore=NOT_COPIED)
    dist = tmp_path_factory.mktemp("dist")
    _must(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(source)],
               cwd=source))
    (built,) = dist.glob("equity_orders-*.whl")
    return built


@pytest.fixture(scope="session")
def host_venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv outside the checkout with the wheel installed (one per wheel within a run)."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()[:16]
    venv = tmp_path_factory.getbasetemp() / f"host-venv-{digest}"
    python = venv / "bin" / "python"
    if not python.exists():
        _must(_run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent))
        # requirements.txt's exact pins as constraints (a constraint cannot carry extras).
        constraints = venv / "constraints.txt"
        constraints.write_text(re.sub(r"\[[^\]]*\]", "", (CHECKOUT / "requirements.txt").read_text()))
        _must(_run([str(python), "-m", "pip", "install", "--quiet", "-c", str(constraints), str(wheel), *HOST_NEEDS],
                   cwd=venv.parent, env=_clean_env(), timeout=900))
    return venv


def _host_database_url() -> str | None:
    """On the PostgreSQL leg, the suite's server with the host's own database name; else None (SQLite)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return None
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}_host"))


@pytest.fixture(scope="session")
def host(host_venv, tmp_path_factory):
    """Runs a command of the host project, copied next to its venv, in the host's own environment."""
    project = tmp_path_factory.mktemp("host") / "host_project"
    shutil.copytree(HOST_PROJECT, project, ignore=NOT_COPIED)
    python = str(host_venv / "bin" / "python")
    env = _clean_env()
    env["PATH"] = f"{host_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    if _host_database_url():
        env["HOST_DATABASE_URL"] = _host_database_url()
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]

    def run(*args, extra_env=None, timeout=600):
        return _run([python, *args], cwd=project, env={**env, **(extra_env or {})}, timeout=timeout)

    run.project = project
    return run


# --- the package ----------------------------------------------------------------------------------

def test_the_package_list_names_every_package_of_the_four_apps():
    from setuptools import find_packages

    listed = set(tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set(find_packages(str(CHECKOUT), include=[f"{app}*" for app in APPS]))
    assert listed == found


def test_the_wheel_holds_the_four_apps_and_nothing_of_the_demo_site(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {*APPS, next(t for t in top if t.endswith(".dist-info"))}
    for needed in ("equity/migrations/0002_feature_flags.py", "audit/migrations/0001_initial.py",
                   "brokers/management/commands/set_live_enabled.py",
                   "equity/management/commands/reconcile_orders.py"):
        assert needed in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    for requirement in ("Django", "djangorestframework", "django-waffle", "exchange_calendars"):
        assert re.search(rf"^Requires-Dist: {requirement}\b.*[<>]", metadata, re.MULTILINE | re.IGNORECASE)


def test_no_app_imports_the_demo_site():
    imports_config = re.compile(r"^\s*(from|import)\s+config\b", re.MULTILINE)
    offenders = [str(path.relative_to(CHECKOUT)) for app in APPS for path in (CHECKOUT / app).rglob("*.py")
                 if imports_config.search(path.read_text())]
    assert offenders == []


# --- the host -------------------------------------------------------------------------------------

def test_the_apps_are_imported_from_the_venv_not_from_the_checkout(host, host_venv):
    done = _must(host("-c", "import equity, brokers; print(equity.__file__); print(brokers.__file__)"))
    for line in done.stdout.split():
        assert Path(line).is_relative_to(host_venv), line
    assert host("-c", "import config.middleware").returncode != 0  # the host's config, not the demo's


def test_the_host_passes_check(host):
    done = _must(host("manage.py", "check"))
    assert "no issues" in done.stdout


def test_a_host_without_the_credentials_key_fails_check_naming_it(host):
    done = host("manage.py", "check", extra_env={"HOST_WITHOUT_CREDENTIALS_KEYS": "1"})
    assert done.returncode != 0
    assert 'EQUITY_ORDERS["CREDENTIALS_KEYS"] is missing' in done.stderr
    assert "brokers.E001" in done.stderr
    assert "AttributeError" not in done.stderr


def test_makemigrations_finds_nothing_to_do_under_the_hosts_auto_field_and_time_zone(host):
    done = _must(host("manage.py", "makemigrations", "--check", "--dry-run"))
    assert "No changes detected" in done.stdout


def test_the_hosts_schema_validates_without_warnings(host):
    done = _must(host("manage.py", "spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json"))
    assert '"/trading/equity/orders/"' in done.stdout


def test_the_hosts_own_suite_passes(host):
    """Anonymous refused; JWT (e-mail login) and session+CSRF place, list, get, cancel; isolation;
    envelope vs the host's DRF shape; admin; schema; commands (tests/host_project/host_tests/)."""
    done = host("-m", "pytest", "-p", "no:cacheprovider", "-rf", timeout=900)
    assert done.returncode == 0, f"--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-3000:]}"
    assert re.search(r"\b\d+ passed\b", done.stdout) and " failed" not in done.stdout
