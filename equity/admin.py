"""Pushed order updates in admin: subscriptions, deliveries and every attempt, read-only.

An operator may retry a delivery or disable a subscription; both are actions, logged in Django's
admin log (LogEntry, "History") with who did it, and in the application log.
"""

from __future__ import annotations

import logging

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry

from brokers.admin import SearchByUserLogin
from equity import webhooks
from equity.models import OrderEvent, WebhookAttempt, WebhookDelivery, WebhookSubscription

logger = logging.getLogger(__name__)


class ReadOnlyAdmin(admin.ModelAdmin):
    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return request.method in ("GET", "HEAD") and super().has_view_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False


def _audit(request, obj, message: str) -> None:
    LogEntry.objects.log_actions(user_id=request.user.pk, queryset=[obj], action_flag=CHANGE,
                                 change_message=message, single_object=True)
    logger.info("webhook admin action", extra={"operator": request.user.pk, "object": str(obj), "action": message})


class AttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "status_code", "latency_ms", "error", "worker")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(SearchByUserLogin, ReadOnlyAdmin):
    list_display = ("id", "user", "url", "active", "failing_since", "disabled_at", "created_at")
    list_filter = ("active",)
    search_fields = ("url",)
    exclude = ("signing",)  # the signing secret is never shown
    actions = ["disable_subscriptions"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields if f.name != "signing"]

    @admin.action(description="Disable the selected subscriptions (no further deliveries)", permissions=["view"])
    def disable_subscriptions(self, request, queryset):
        for subscription in queryset.filter(active=True):
            webhooks.disable(subscription, reason=f"Disabled by an operator ({request.user.get_username()}).")
            _audit(request, subscription, "Disabled the webhook subscription.")
        self.message_user(request, "Disabled.", messages.SUCCESS)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("id", "subscription", "event", "status", "attempts", "next_attempt_at", "delivered_at")
    list_filter = ("status",)
    list_select_related = ("subscription", "event")
    inlines = [AttemptInline]
    actions = ["retry_deliveries"]
    show_full_result_count = False

    @admin.action(description="Retry the selected deliveries now", permissions=["view"])
    def retry_deliveries(self, request, queryset):
        for delivery in queryset:
            webhooks.retry_delivery(delivery)
            _audit(request, delivery, "Retry requested by an operator.")
        self.message_user(request, "Queued for delivery.", messages.SUCCESS)


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(ReadOnlyAdmin):
    list_display = ("delivery", "number", "started_at", "status_code", "latency_ms", "error", "worker")
    list_filter = ("status_code",)
    list_select_related = ("delivery",)
    show_full_result_count = False


@admin.register(OrderEvent)
class OrderEventAdmin(SearchByUserLogin, ReadOnlyAdmin):
    list_display = ("id", "user", "type", "order", "created_at")
    list_filter = ("type",)
    list_select_related = ("user", "order")
    show_full_result_count = False
