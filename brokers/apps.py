from django.apps import AppConfig


class BrokersConfig(AppConfig):
    name = "brokers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from brokers import conf  # noqa: F401 - registers the EQUITY_ORDERS system check
