"""A host product's settings: its own choices everywhere, the apps added as the README says."""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "host-product-test-secret-key-not-for-production-0123456789"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]

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
    "accounts",
    # The order apps and what they need (README: "Add to an existing Django project").
    "waffle",
    "pgtrigger",
    "django_tasks",
    "django_tasks_db",
    "audit",
    "brokers",
    "risk",
    "equity",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "waffle.middleware.WaffleMiddleware",
]

ROOT_URLCONF = "config.urls"
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

DATABASES = {"default": dj_database_url.parse(os.environ.get("HOST_DATABASE_URL")
                                              or f"sqlite:///{BASE_DIR / 'host.sqlite3'}")}

if os.environ.get("REDIS_URL"):
    CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": os.environ["REDIS_URL"],
                          "KEY_PREFIX": "host-product"}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The host's own choices, each different from the demo site's.
AUTH_USER_MODEL = "accounts.User"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
TIME_ZONE = "Asia/Seoul"
USE_TZ = True
LANGUAGE_CODE = "en-us"
STATIC_URL = "static/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # a test host: fast logins

# DRF's defaults (AllowAny, DRF's exception handler, decimals as strings), sessions first for the
# web app and JWT for the mobile app.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {"TITLE": "Host product API", "VERSION": "1.0.0"}

# The one key the apps require; everything else keeps its default.
EQUITY_ORDERS = {"CREDENTIALS_KEYS": ["aG9zdC1wcm9kdWN0LXRlc3Qta2V5LTMyLWJ5dGVzISE="]}
if os.environ.get("HOST_WITHOUT_CREDENTIALS_KEYS"):
    EQUITY_ORDERS = {}

# Webhook deliveries and the broker sync run on the host's worker (README "Order updates pushed").
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
