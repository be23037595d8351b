from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from audit.chain import verify_chain
from audit.models import AuditChainHead, BrokerOrderEvent
from brokers.admin import ReadOnlyAdmin, SearchByUserLogin

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
class BrokerOrderEventAdmin(SearchByUserLogin, ReadOnlyAdmin):
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
    actions = ["verify_chains"]

    @admin.action(description="Verify the hash chains of the selected rows' users")
    def verify_chains(self, request, queryset):
        for user_id in sorted(set(queryset.values_list("user_id", flat=True)), key=lambda v: (v is not None, str(v))):
            report = verify_chain(user_id)
            if report.ok:
                self.message_user(request, f"{report.chain}: the chain verifies ({report.rows} rows).", messages.SUCCESS)
            else:
                self.message_user(request, f"{report.chain}: BROKEN at row {report.broken_event_id}: {report.reason}",
                                  messages.ERROR)

    def get_actions(self, request):
        # The action is a read; delete_selected stays off (has_delete_permission is False anyway).
        return {k: v for k, v in super().get_actions(request).items() if k == "verify_chains"}

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


@admin.register(AuditChainHead)
class AuditChainHeadAdmin(ReadOnlyAdmin):
    """One row per user's chain, with whether it verifies (recomputed when the page is shown)."""

    list_display = ("chain", "length", "last_event_id", "updated_at", "verifies")
    search_fields = ("chain",)
    list_per_page = 20

    @admin.display(boolean=True, description="chain verifies")
    def verifies(self, obj: AuditChainHead) -> bool:
        user_id = None if obj.chain == "global" else obj.chain.removeprefix("user:")
        return verify_chain(user_id).ok
