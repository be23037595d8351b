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
        post_migrate.connect(ensure_feature_flags, sender=self, dispatch_uid="equity.ensure_feature_flags")
