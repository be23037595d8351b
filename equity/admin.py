"""Operators see and change every kill switch here (SPEC.md "Trader controls").

Every save and delete goes through equity.controls, so an operator's change is audited like a
user's and may release a switch before its `until`.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.utils import timezone

from audit.services import RequestMeta
from brokers.admin import SearchByUserLogin
from brokers.types import AssetClass
from equity import controls
from risk.models import KillSwitch


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
