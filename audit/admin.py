from django.contrib import admin

from audit.models import BrokerOrderEvent
from brokers.admin import SearchByUserLogin


@admin.register(BrokerOrderEvent)
class BrokerOrderEventAdmin(SearchByUserLogin, admin.ModelAdmin):
    """Read-only for everyone, superusers included: the log is append-only."""

    list_display = ("created_at", "user", "event_type", "asset_class", "exchange", "environment", "symbol",
                    "side", "qty", "order_type", "client_order_id", "broker_order_id", "error_code", "risk_rule",
                    "first_live_order")
    list_filter = ("event_type", "asset_class", "environment", "exchange", "first_live_order",
                   ("created_at", admin.DateFieldListFilter), "user")
    search_fields = ("client_order_id", "broker_order_id", "broker_client_id", "request_id",
                     "client_request_id")  # and the user's login
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
