from django.contrib import admin
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from audit.models import BrokerOrderEvent
from brokers.admin import SearchByUserLogin

# The list fits a 1400 px window beside admin's navigation and the filters (tests/audit/test_admin_list_width.py
# measures it in Chromium): the columns a reviewer reads first, two short lines where two facts belong
# together, long ids shortened (the full id in the tooltip, in the search and on the detail page).
ID_CHARS = 18


def _shortened(value: str, limit: int = ID_CHARS):
    if len(value) <= limit:
        return value
    return format_html('<span title="{}">{}…</span>', value, value[:limit - 1])


def _breakable(code: str):
    """A SNAKE_CASE code may wrap after its underscores instead of widening its column."""
    return format_html_join(mark_safe("_<wbr>"), "{}", ((part,) for part in code.split("_")))


@admin.register(BrokerOrderEvent)
class BrokerOrderEventAdmin(SearchByUserLogin, admin.ModelAdmin):
    """Read-only for everyone, superusers included: the log is append-only."""

    list_display = ("when", "trader", "event", "order", "client_order", "error", "risk_rule")
    list_display_links = ("when",)
    list_filter = ("event_type", "asset_class", "environment", "exchange", "first_live_order",
                   ("created_at", admin.DateFieldListFilter), "user")
    search_fields = ("client_order_id", "broker_order_id", "broker_client_id", "request_id",
                     "client_request_id")  # and the user's login
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    show_full_result_count = False

    @admin.display(description="when (UTC)", ordering="created_at")
    def when(self, event):
        return format_html("{}<br>{}", f"{event.created_at:%Y-%m-%d}", f"{event.created_at:%H:%M:%S}")

    @admin.display(description="user", ordering="user__username")
    def trader(self, event):
        return _shortened(str(event.user), 16)

    @admin.display(description="event", ordering="event_type")
    def event(self, event):
        if event.first_live_order:
            return format_html("{}<br><strong>first live order</strong>", _breakable(event.event_type))
        return _breakable(event.event_type)

    @admin.display(description="order")
    def order(self, event):
        """side qty symbol, then order type, broker and environment (live in bold)."""
        qty = "" if event.qty is None else f"{event.qty.normalize():f}"
        first = format_html("{} {}", " ".join(filter(None, [event.side, qty])), _shortened(event.symbol, 16))
        where = " · ".join(filter(None, [event.order_type, event.exchange]))
        environment = format_html("<strong>{}</strong>", event.environment) if event.environment == "live" \
            else event.environment
        return format_html("{}<br>{}{}{}", first, where, " · " if where and environment else "", environment)

    @admin.display(description="client order id", ordering="client_order_id")
    def client_order(self, event):
        return _shortened(event.client_order_id)

    @admin.display(description="error code", ordering="error_code")
    def error(self, event):
        return _breakable(event.error_code) if event.error_code else ""

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
