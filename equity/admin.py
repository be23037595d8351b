"""The equity app in admin: kill switches, and pushed order updates.

Kill switches (SPEC.md "Trader controls"): every save and delete goes through equity.controls, so
an operator's change is audited like a user's and may release a switch before its `until`.

Pushed order updates: subscriptions, deliveries and every attempt, read-only. An operator may
retry a delivery or disable a subscription; both are actions, logged in Django's admin log
(LogEntry, "History") with who did it, and in the application log.
"""

from __future__ import annotations

import logging

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.utils import timezone

from audit.services import RequestMeta
from brokers.admin import ReadOnlyAdmin, SearchByUserLogin
from brokers.types import AssetClass
from equity import controls, webhooks
from equity.models import OrderEvent, WebhookAttempt, WebhookDelivery, WebhookSubscription
from risk.models import KillSwitch

logger = logging.getLogger(__name__)


def operator_login(request) -> str:
    user = request.user
    return f"operator {getattr(user, user.USERNAME_FIELD)}"


def _meta(request) -> RequestMeta:
    return RequestMeta.of(request)


class InForce(admin.SimpleListFilter):
    title = "in force"
    parameter_name = "in_force"

    def lookups(self, request, model_admin):
        return [("yes", "In force"), ("no", "Lapsed")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.active()
        if self.value() == "no":
            return queryset.exclude(pk__in=queryset.active().values("pk"))
        return queryset


class KillSwitchForm(forms.ModelForm):
    asset_class = forms.ChoiceField(choices=[("", "every asset class"), *[(a.value, a.value) for a in AssetClass]],
                                    required=False)

    class Meta:
        model = KillSwitch
        fields = ("user", "asset_class", "mode", "reason", "until")

    def clean_until(self):
        until = self.cleaned_data.get("until")
        if until is not None and until <= timezone.now():
            raise forms.ValidationError("Must be in the future.")
        return until


@admin.register(KillSwitch)
class KillSwitchAdmin(SearchByUserLogin, admin.ModelAdmin):
    form = KillSwitchForm
    list_display = ("scope", "mode", "reason", "until", "in_force", "set_by", "set_at")
    list_filter = (InForce, "mode", "asset_class")
    search_fields = ("reason", "set_by")
    raw_id_fields = ("user",)
    list_select_related = ("user",)

    @admin.display(description="scope")
    def scope(self, obj: KillSwitch) -> str:
        return obj.scope_text

    @admin.display(boolean=True, description="in force")
    def in_force(self, obj: KillSwitch) -> bool:
        return obj.until is None or obj.until > timezone.now()

    def get_readonly_fields(self, request, obj=None):
        return ("user", "asset_class") if obj is not None else ()

    def save_model(self, request, obj, form, change):
        done = controls.set_kill_switch(user=obj.user, mode=obj.mode, asset_class=obj.asset_class or "",
                                        reason=obj.reason, until=obj.until, set_by=operator_login(request),
                                        by_operator=True, meta=_meta(request))
        obj.pk = done.switch.pk
        obj.set_by, obj.set_at, obj.set_by_operator = done.switch.set_by, done.switch.set_at, True

    def delete_model(self, request, obj):
        controls.release_kill_switch(user=obj.user, asset_class=obj.asset_class, released_by=operator_login(request),
                                     by_operator=True, meta=_meta(request))

    def delete_queryset(self, request, queryset):
        for obj in queryset.select_related("user"):
            self.delete_model(request, obj)


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
