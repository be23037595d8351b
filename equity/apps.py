from django.apps import AppConfig
from django.db.models.signals import post_migrate

# The feature flags of SPEC.md and their initial state: paper on for everyone, live off.
FEATURE_FLAGS = {"FEATURE_EQUITY_PAPER": True, "FEATURE_EQUITY_LIVE": False}


def ensure_feature_flags(**kwargs):
    """Recreate a missing flag (after a database flush) without touching one an operator changed."""
    from waffle.models import Flag

    for name, everyone in FEATURE_FLAGS.items():
        Flag.objects.get_or_create(name=name, defaults={"everyone": everyone,
                                                        "note": "Gates POST /api/equity/orders (SPEC.md)."})


class EquityConfig(AppConfig):
    name = "equity"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.core.checks import register

        post_migrate.connect(ensure_feature_flags, sender=self, dispatch_uid="equity.ensure_feature_flags")
        register(check_task_backend)


def check_task_backend(app_configs, **kwargs):
    """Webhook deliveries must run on a worker, never inside a request: django-tasks' default
    backend (immediate, when TASKS is not set) would run them in the placement's own process."""
    from django.conf import settings
    from django.core.checks import Warning

    backend = (getattr(settings, "TASKS", None) or {}).get("default", {}).get("BACKEND", "")
    if backend.endswith(("ImmediateBackend", "DummyBackend")) or not backend:
        return [Warning("TASKS has no worker backend: webhook deliveries and the broker sync would run in the "
                        "request's process (immediate) or never (dummy).",
                        hint='Set TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}} and run '
                             "`manage.py db_worker` (README \"Order updates pushed\").", id="equity.W001")]
    return []
