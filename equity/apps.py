from django.apps import AppConfig


class EquityConfig(AppConfig):
    name = "equity"
    default_auto_field = "django.db.models.BigAutoField"
