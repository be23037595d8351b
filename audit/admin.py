from django.contrib import admin, messages

from audit.chain import verify_chain
from audit.models import AuditChainHead, BrokerOrderEvent
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

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditChainHead)
class AuditChainHeadAdmin(admin.ModelAdmin):
    """One row per user's chain, with whether it verifies (recomputed when the page is shown)."""

    list_display = ("chain", "length", "last_event_id", "updated_at", "verifies")
    search_fields = ("chain",)
    list_per_page = 20

    @admin.display(boolean=True, description="chain verifies")
    def verifies(self, obj: AuditChainHead) -> bool:
        user_id = None if obj.chain == "global" else obj.chain.removeprefix("user:")
        return verify_chain(user_id).ok

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
