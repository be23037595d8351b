"""The only module that reads the environment (SPEC.md "Configuration").

Every knob has a safe local default so that a fresh checkout runs with no keys and no network;
with DEBUG=0 the process refuses to start on a development secret or credentials key.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value in (None, "") else value


def _bool(name: str, default: bool) -> bool:
    value = _env(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _decimal(name: str, default: str) -> Decimal:
    return Decimal(_env(name, default))


def _int(name: str, default: int) -> int:
    return int(_env(name, str(default)))


DEBUG = _bool("DEBUG", True)

DEV_SECRET_KEY = "dev-insecure-secret-key-change-me-0123456789abcdefghijklmnopqrstuvwxyz"
# A valid Fernet key that is public on purpose: only ever used with DEBUG=1.
DEV_CREDENTIALS_KEY = "ZGV2LW9ubHktZmVybmV0LWtleS1ub3QtZm9yLXByb2Q="

SECRET_KEY = _env("SECRET_KEY", DEV_SECRET_KEY)
BROKER_CREDENTIALS_KEYS = [k.strip() for k in (_env("BROKER_CREDENTIALS_KEYS") or "").split(",") if k.strip()]
if DEBUG and not BROKER_CREDENTIALS_KEYS:
    BROKER_CREDENTIALS_KEYS = [DEV_CREDENTIALS_KEY]

# With DEBUG=0 the process refuses to start (any manage.py command, gunicorn, runserver) on a
# development secret, a development or missing credentials key, or no ALLOWED_HOSTS. The messages
# name the variable, never its value.
if not DEBUG:
    if SECRET_KEY == DEV_SECRET_KEY:
        raise ImproperlyConfigured("DEBUG=0 needs SECRET_KEY set to a real secret, not the development default.")
    if not BROKER_CREDENTIALS_KEYS:
        raise ImproperlyConfigured("DEBUG=0 needs BROKER_CREDENTIALS_KEYS: comma-separated Fernet keys, newest "
                                   "first (make one with cryptography.fernet.Fernet.generate_key()).")
    if DEV_CREDENTIALS_KEY in BROKER_CREDENTIALS_KEYS:
        raise ImproperlyConfigured("DEBUG=0 needs BROKER_CREDENTIALS_KEYS set to real Fernet keys, "
                                   "not the development default.")


def _check_fernet_keys(keys: list[str]) -> None:
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except ValueError:
            raise ImproperlyConfigured(f"BROKER_CREDENTIALS_KEYS: key {position} is not a Fernet key "
                                       "(32 url-safe base64-encoded bytes).") from None


_check_fernet_keys(BROKER_CREDENTIALS_KEYS)

if _env("ALLOWED_HOSTS"):
    ALLOWED_HOSTS = [h.strip() for h in _env("ALLOWED_HOSTS").split(",") if h.strip()]
elif DEBUG:
    ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", "testserver"]
else:
    raise ImproperlyConfigured("DEBUG=0 needs ALLOWED_HOSTS: the comma-separated host names this service answers to.")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "waffle",
    "django_ratelimit",  # for its system checks on the rate-limit cache (see SILENCED_SYSTEM_CHECKS)
    "pgtrigger",
    "django_tasks",
    "django_tasks_db",
    "audit",
    "brokers",
    "risk",
    "equity",
]

MIDDLEWARE = [
    "brokers.request_log.RequestLogMiddleware",  # first: one line per request, with the final status
    "brokers.middleware.ApiErrorsAsJsonMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "waffle.middleware.WaffleMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

VAR_DIR.mkdir(exist_ok=True)
DATABASES = {
    "default": dj_database_url.parse(
        _env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=60,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several threads of runserver write at once (idempotency rows, audit rows): wait for the
    # write lock instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
DATABASES["default"]["ATOMIC_REQUESTS"] = False  # see STYLE.md rule 4: refusals keep their audit rows

REDIS_URL = _env("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
            },
        }
    }
    CACHES["waffle"] = CACHES["default"]  # shared: a save invalidates the flag for every worker at once
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "equity"},
        # Per process: a flag flipped by another process (waffle_flag, admin in another worker)
        # is seen once this short-lived entry expires, within 5 seconds (SPEC.md).
        "waffle": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "waffle",
                   "TIMEOUT": 5},
    }
WAFFLE_CACHE_NAME = "waffle"

# django-ratelimit's own system checks refuse a per-process cache (E003: counters not shared by the
# workers) and warn on Django's RedisCache (W001). The embedded default (DEBUG=1, no REDIS_URL) is
# one runserver process, where a per-process counter is exact: only there are both silenced.
# With DEBUG=0 nothing is silenced, so without REDIS_URL `manage.py check` fails on E003: several
# workers would each count their own rate limit and live daily cap. With REDIS_URL the cache is
# django_redis, which both checks accept.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"] if DEBUG and not REDIS_URL else []
RATELIMIT_USE_CACHE = "default"
RATELIMIT_FAIL_OPEN = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

ADMINS = [("Operators", a.strip()) for a in (_env("ADMINS", "") or "").split(",") if a.strip()]
EMAIL_BACKEND = _env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
SERVER_EMAIL = _env("SERVER_EMAIL", "equity-orders@localhost")

# HTTPS hardening. With DEBUG=0 every knob defaults to its production value, and
# `manage.py check --deploy` is clean given SECRET_KEY, BROKER_CREDENTIALS_KEYS, ALLOWED_HOSTS and
# REDIS_URL. Each can be relaxed from the environment where a deployment needs it (1/0):
#   SECURE_SSL_REDIRECT (1)               redirect http to https (0 if the proxy already does)
#   SECURE_HSTS_SECONDS (31536000)        Strict-Transport-Security max-age, one year
#   SECURE_HSTS_INCLUDE_SUBDOMAINS (1), SECURE_HSTS_PRELOAD (1)
#   SESSION_COOKIE_SECURE (1), CSRF_COOKIE_SECURE (1)   admin and browsable-API cookies over https only
#   SECURE_PROXY_SSL_HEADER (1)           trust "X-Forwarded-Proto: https" from the TLS-terminating
#                                         proxy, which must set or strip it; 0 when clients connect directly
#   CSRF_TRUSTED_ORIGINS (unset)          extra https origins allowed to POST forms (admin), comma-separated
# With DEBUG=1 (local http) all of this is off.
if not DEBUG:
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SESSION_COOKIE_SECURE = _bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = _bool("CSRF_COOKIE_SECURE", True)
    SECURE_SSL_REDIRECT = _bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = _int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = _bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = _bool("SECURE_HSTS_PRELOAD", True)
    if _bool("SECURE_PROXY_SSL_HEADER", True):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    CSRF_TRUSTED_ORIGINS = [o.strip() for o in (_env("CSRF_TRUSTED_ORIGINS") or "").split(",") if o.strip()]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # JWT first: its WWW-Authenticate header makes DRF answer 401 rather than 403. On the apps'
        # routes simplejwt's class stands for its password-bound subclass (brokers/authentication.py):
        # a malformed user_id, a deleted user, a changed password or a log-out everywhere is a 401.
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "brokers.api.api_exception_handler",
    "COERCE_DECIMAL_TO_STRING": False,
    "UNAUTHENTICATED_USER": None,
}

JWT_ACCESS_MINUTES = _int("JWT_ACCESS_MINUTES", 15)
JWT_REFRESH_MINUTES = _int("JWT_REFRESH_MINUTES", 1440)
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=JWT_ACCESS_MINUTES),
    "REFRESH_TOKEN_LIFETIME": timedelta(minutes=JWT_REFRESH_MINUTES),
    "ALGORITHM": "HS256",
    "SIGNING_KEY": SECRET_KEY,
    # Every token simplejwt makes (RefreshToken.for_user, here too) carries a digest of the password
    # hash it was issued under (its `hash_password` claim); the apps refuse it once the password has
    # changed (brokers/authentication.py). The apps' login route writes the claim in any case.
    "CHECK_REVOKE_TOKEN": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Equity Orders API",
    "DESCRIPTION": "Route orders to your own paper or live broker account, behind five gates.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and the docs are public, like the token routes: no authentication runs there, so
    # a stale or forged bearer token is ignored instead of turning them into a 401.
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": False,
    # Paths as SPEC.md writes them: once each, without the trailing slash that every route also accepts.
    "PREPROCESSING_HOOKS": ["brokers.api.document_paths_without_trailing_slash"],
    # The apps' reference of codes, statuses and filters (brokers/reference.py) under the description.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "brokers.reference.add_reference_to_schema"],
    "ENUM_NAME_OVERRIDES": {},
}

# The apps' settings (brokers/conf.py has every key and its default; the README's table lists
# them). The environment variable names are the README's, unchanged.
EQUITY_ORDERS = {
    "CREDENTIALS_KEYS": BROKER_CREDENTIALS_KEYS,
    "ALPACA_PAPER_URL": _env("ALPACA_PAPER_URL", "https://paper-api.alpaca.markets"),
    "ALPACA_LIVE_URL": _env("ALPACA_LIVE_URL", "https://api.alpaca.markets"),
    "ALPACA_DATA_URL": _env("ALPACA_DATA_URL", "https://data.alpaca.markets"),
    "KIS_REAL_URL": _env("KIS_REAL_URL", "https://openapi.koreainvestment.com:9443"),
    "KIS_MOCK_URL": _env("KIS_MOCK_URL", "https://openapivts.koreainvestment.com:29443"),
    "UPBIT_URL": _env("UPBIT_URL", "https://api.upbit.com"),
    "BROKER_TIMEOUT_SECONDS": float(_env("BROKER_TIMEOUT_SECONDS", "10")),
    # A broker with client ids: how long after the last send a lookup that still finds nothing proves
    # the order absent (reconcile_orders then rejects it). A lookup may lag; this is far beyond it.
    "BROKER_ABSENT_AFTER_SECONDS": float(_env("BROKER_ABSENT_AFTER_SECONDS", "600")),
    # Request pacing per broker key, shared by the workers through the cache (brokers/pacing.py).
    "KIS_MOCK_REQUESTS_PER_SECOND": float(_env("KIS_MOCK_REQUESTS_PER_SECOND", "2")),  # 모의투자 server
    "KIS_REAL_REQUESTS_PER_SECOND": float(_env("KIS_REAL_REQUESTS_PER_SECOND", "20")),  # 실전투자 server
    "UPBIT_ORDER_REQUESTS_PER_SECOND": float(_env("UPBIT_ORDER_REQUESTS_PER_SECOND", "12")),  # group=order
    "UPBIT_PRIVATE_REQUESTS_PER_SECOND": float(_env("UPBIT_PRIVATE_REQUESTS_PER_SECOND", "30")),  # group=default
    # How long a request may wait for its turn before it is refused (BrokerUnavailable, nothing sent).
    "PACING_MAX_WAIT_SECONDS": float(_env("PACING_MAX_WAIT_SECONDS", "5")),
    # Bounded restarts of a KIS inquiry whose pages changed while it was read (조회이후에 자료가 변경되었습니다).
    "KIS_PAGING_RESTARTS": _int("KIS_PAGING_RESTARTS", 3),
    # Audit: the client address of each audit row (audit.services.client_ip_of). Default: the peer
    # (REMOTE_ADDR), and X-Forwarded-For is ignored, since a client can write anything there. Behind
    # proxies that append to X-Forwarded-For, set how many there are (TRUSTED_PROXY_COUNT) and/or
    # their addresses or networks (TRUSTED_PROXIES, comma-separated, e.g. "10.0.0.0/8,192.0.2.7"):
    # the client is then the right-most X-Forwarded-For hop that is not one of them.
    "TRUSTED_PROXY_COUNT": _int("TRUSTED_PROXY_COUNT", 0),
    "TRUSTED_PROXIES": [p.strip() for p in (_env("TRUSTED_PROXIES") or "").split(",") if p.strip()],
    # Gates
    "RATE_LIMIT_ORDERS": _env("RATE_LIMIT_ORDERS", "30/m"),
    "RATE_LIMIT_LIVE_DAILY": _int("RATE_LIMIT_LIVE_DAILY", 200),
    # Failed logins (brokers/login_throttle.py), django-ratelimit fixed windows on the shared cache:
    # a few per login name, a generous number per client address (an office or a proxy shares one).
    "RATE_LIMIT_LOGIN_FAILURES_PER_NAME": _env("RATE_LIMIT_LOGIN_FAILURES_PER_NAME", "5/m"),
    "RATE_LIMIT_LOGIN_FAILURES_PER_ADDRESS": _env("RATE_LIMIT_LOGIN_FAILURES_PER_ADDRESS", "100/m"),
    # Request bodies (brokers/parsers.py): larger -> 413 PAYLOAD_TOO_LARGE, deeper -> 400
    # VALIDATION_ERROR. An order is about 300 bytes, 2 levels deep.
    "MAX_BODY_BYTES": _int("MAX_BODY_BYTES", 64 * 1024),
    "MAX_JSON_DEPTH": _int("MAX_JSON_DEPTH", 32),
    # RiskManager v2 defaults (fractions, not percents)
    "RISK_MAX_TRADE_RISK_PCT": _decimal("RISK_MAX_TRADE_RISK_PCT", "0.02"),
    "RISK_UNPROTECTED_LOSS_PCT": _decimal("RISK_UNPROTECTED_LOSS_PCT", "0.10"),
    "RISK_DAILY_LOSS_LIMIT_PCT": _decimal("RISK_DAILY_LOSS_LIMIT_PCT", "0.05"),
    # Simulator
    "SIM_STARTING_CASH_USD": _decimal("SIM_STARTING_CASH_USD", "100000"),
    "SIM_STARTING_CASH_KRW": _decimal("SIM_STARTING_CASH_KRW", "100000000"),
    "EQUITY_ALERT_WEBHOOK_URL": _env("EQUITY_ALERT_WEBHOOK_URL"),
    "EQUITY_ALERT_TIMEOUT_SECONDS": float(_env("EQUITY_ALERT_TIMEOUT_SECONDS", "3")),
    # The standalone site answers every /api/ error in JSON (brokers.middleware, optional in a host).
    "JSON_ERRORS_PATH_PREFIXES": ["/api/"],
    # Pushed order updates: webhooks and the broker state sync (README "Order updates pushed").
    "WEBHOOK_TIMEOUT_SECONDS": float(_env("WEBHOOK_TIMEOUT_SECONDS", "5")),
    "WEBHOOK_RETRY_HOURS": float(_env("WEBHOOK_RETRY_HOURS", "24")),
    "WEBHOOK_RETRY_BASE_SECONDS": float(_env("WEBHOOK_RETRY_BASE_SECONDS", "10")),
    # Plain http to a loopback receiver (the README's walk-through) only in development.
    "WEBHOOK_ALLOW_HTTP_LOOPBACK": DEBUG,
    "WEBHOOK_MAX_SUBSCRIPTIONS": _int("WEBHOOK_MAX_SUBSCRIPTIONS", 10),
    "WEBHOOK_SWEEP_SECONDS": float(_env("WEBHOOK_SWEEP_SECONDS", "5")),
    "SYNC_INTERVAL_SECONDS": float(_env("SYNC_INTERVAL_SECONDS", "10")),
    "SYNC_CONCURRENCY": _int("SYNC_CONCURRENCY", 4),
    "SYNC_MAX_ORDERS_PER_CONNECTION": _int("SYNC_MAX_ORDERS_PER_CONNECTION", 200),
    "RECONCILE_INTERVAL_SECONDS": float(_env("RECONCILE_INTERVAL_SECONDS", "60")),
}

# The worker (Django's task API, django-tasks). Default: the database queue, worked by
# `manage.py db_worker` (no new server). TASKS_BACKEND=rq puts the same tasks on Redis (REDIS_URL)
# through django-tasks-rq, worked by `manage.py rqworker default --with-scheduler`.
TASKS_BACKEND = _env("TASKS_BACKEND", "database")
if TASKS_BACKEND == "rq":
    if not REDIS_URL:
        raise ImproperlyConfigured("TASKS_BACKEND=rq needs REDIS_URL.")
    INSTALLED_APPS += ["django_rq"]
    RQ_QUEUES = {"default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 300}}
    TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}}
elif TASKS_BACKEND == "database":
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
else:
    raise ImproperlyConfigured("TASKS_BACKEND must be database or rq.")

_TASKS_LOG_LEVEL = logging.getLevelName(_env("TASKS_LOG_LEVEL", "WARNING").upper())
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # brokers.request_log writes one line per request ("equity.requests"); Django's own request lines
    # would repeat every 4xx and 5xx (django.request) and every request under runserver (django.server),
    # so of those only the records that carry a traceback (an unhandled exception) are kept.
    "filters": {"only_tracebacks": {"()": "django.utils.log.CallbackFilter",
                                    "callback": "ext://brokers.request_log.only_tracebacks"},
                "tasks_level": {"()": "django.utils.log.CallbackFilter",
                                "callback": lambda record: record.levelno >= _TASKS_LOG_LEVEL}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": _env("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.request": {"filters": ["only_tracebacks"]},
        "django.server": {"filters": ["only_tracebacks"]},
        # At DEBUG, urllib3 logs full URLs, and some broker GETs carry an account number.
        "urllib3": {"level": "WARNING"},
        # The worker logs every task's start and end at INFO: the periodic ones every few seconds. A
        # filter, not a level: db_worker sets its logger's level itself (INFO at verbosity 1).
        "django_tasks": {"filters": ["tasks_level"]},
    },
}
