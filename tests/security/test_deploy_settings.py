"""Production settings, checked the way a deployment runs them: `manage.py` in a fresh process.

With DEBUG=0 and real SECRET_KEY, BROKER_CREDENTIALS_KEYS, ALLOWED_HOSTS and REDIS_URL,
`check --deploy` reports nothing; with a development secret or key, none, or a malformed one,
the process refuses to start and says which variable is wrong without printing its value.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from config import settings as project_settings

ROOT = Path(__file__).resolve().parents[2]
# The variables of SPEC.md "Configuration" and the HTTPS knobs: none leaks in from the outer run.
OURS = re.compile(r"^(DEBUG|SECRET_KEY|BROKER_CREDENTIALS_KEYS|ALLOWED_HOSTS|REDIS_URL|DATABASE_URL|SECURE_\w+|"
                  r"SESSION_COOKIE_SECURE|CSRF_\w+|LOG_LEVEL|DJANGO_SETTINGS_MODULE)$")


def manage(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not OURS.match(k)}
    base["DATABASE_URL"] = f"sqlite:///{tmp_path / 'deploy.sqlite3'}"
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


def production(**overrides: str) -> dict[str, str]:
    env = {"DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(64),
           "BROKER_CREDENTIALS_KEYS": f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}",
           "ALLOWED_HOSTS": "orders.example.com", "REDIS_URL": "redis://127.0.0.1:6379/0"}
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    done = manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path, **production())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout, done.stdout + done.stderr


def test_each_https_default_can_be_relaxed_from_the_environment_and_check_deploy_then_says_so(tmp_path):
    relaxed = {"SECURE_SSL_REDIRECT": ("0", "security.W008"), "SECURE_HSTS_SECONDS": ("0", "security.W004"),
               "SESSION_COOKIE_SECURE": ("0", "security.W012"), "CSRF_COOKIE_SECURE": ("0", "security.W016")}
    done = manage("check", "--deploy", tmp_path=tmp_path, **production(**{k: v for k, (v, _) in relaxed.items()}))
    for warning in [w for _, w in relaxed.values()]:
        assert warning in done.stdout + done.stderr, warning
    subdomains = manage("check", "--deploy", tmp_path=tmp_path,
                        **production(SECURE_HSTS_INCLUDE_SUBDOMAINS="0", SECURE_HSTS_PRELOAD="0"))
    assert "security.W005" in subdomains.stderr and "security.W021" in subdomains.stderr


def test_without_a_shared_cache_production_fails_the_rate_limit_check(tmp_path):
    """Several workers with per-process counters would each allow the full rate and live daily cap."""
    done = manage("check", "--deploy", tmp_path=tmp_path, **production(REDIS_URL=None))
    assert done.returncode != 0
    assert "django_ratelimit.E003" in done.stderr


def test_the_development_default_silences_only_the_rate_limit_cache_checks(tmp_path):
    done = manage("check", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "System check identified no issues (2 silenced)." in done.stdout


@pytest.mark.parametrize("env,names", [
    ({"SECRET_KEY": None}, "SECRET_KEY"),
    ({"SECRET_KEY": project_settings.DEV_SECRET_KEY}, "SECRET_KEY"),
    ({"BROKER_CREDENTIALS_KEYS": None}, "BROKER_CREDENTIALS_KEYS"),
    ({"BROKER_CREDENTIALS_KEYS": " , "}, "BROKER_CREDENTIALS_KEYS"),
    ({"BROKER_CREDENTIALS_KEYS": project_settings.DEV_CREDENTIALS_KEY}, "BROKER_CREDENTIALS_KEYS"),
    ({"BROKER_CREDENTIALS_KEYS": f"{Fernet.generate_key().decode()},{project_settings.DEV_CREDENTIALS_KEY}"},
     "BROKER_CREDENTIALS_KEYS"),
    ({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS"),
], ids=["no-secret-key", "dev-secret-key", "no-credentials-keys", "blank-credentials-keys", "dev-credentials-key",
        "dev-credentials-key-second", "no-allowed-hosts"])
def test_debug_0_refuses_to_start_on_a_development_or_missing_secret(tmp_path, env, names):
    done = manage("check", tmp_path=tmp_path, **production(**env))
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and names in done.stderr.splitlines()[-1], done.stderr[-500:]


def test_a_malformed_credentials_key_is_refused_by_position_without_printing_it(tmp_path):
    bad = "this-is-not-a-fernet-key-but-a-secret-anyway"
    done = manage("check", tmp_path=tmp_path,
                  **production(BROKER_CREDENTIALS_KEYS=f"{Fernet.generate_key().decode()},{bad}"))
    assert done.returncode != 0
    assert "BROKER_CREDENTIALS_KEYS: key 2 is not a Fernet key" in done.stderr
    assert bad not in done.stdout + done.stderr


def test_the_wsgi_application_refuses_to_load_on_the_development_secret(tmp_path):
    """What gunicorn imports: it fails at once instead of serving with a public key."""
    base = {k: v for k, v in os.environ.items() if not OURS.match(k)}
    env = {**base, **production(SECRET_KEY=None), "DATABASE_URL": f"sqlite:///{tmp_path / 'w.sqlite3'}"}
    done = subprocess.run([sys.executable, "-c", "import config.wsgi"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "DEBUG=0 needs SECRET_KEY" in done.stderr
