"""Operators manage connections, live enablement and simulator quotes here; no secret is ever shown."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from brokers import services
from brokers.models import BrokerAccount, SimQuote, TraderProfile


def user_login_lookup() -> str:
    """The admin search lookup of a row's user by login, whatever the user model (`user__username`,
    `user__email` for an e-mail login). Used by every admin of the apps."""
    return f"user__{get_user_model().USERNAME_FIELD}"


class SearchByUserLogin:
    """Adds the user's login to `search_fields`, resolved when the admin searches (the user model may be swapped)."""

    search_fields: tuple = ()

    def get_search_fields(self, request):
        return (*self.search_fields, user_login_lookup())


class BrokerAccountForm(forms.ModelForm):
    new_credentials = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False),
        help_text='JSON, e.g. {"api_key": "...", "secret_key": "..."}. Write-only: leave blank to keep the '
                  "stored credentials. Stored credentials are never displayed.")

    class Meta:
        model = BrokerAccount
        fields = ("user", "asset_class", "exchange", "environment", "label", "status")

    def clean_new_credentials(self):
        raw = self.cleaned_data.get("new_credentials")
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise forms.ValidationError("Not valid JSON.") from exc
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise forms.ValidationError("A JSON object of strings.")
        return value



class ReadOnlyAdmin(admin.ModelAdmin):
    """An admin that only shows: records written by the services (audit rows, events, deliveries),
    which no operator adds, edits or deletes by hand. Django's view permission still opens them."""

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(BrokerAccount)
class BrokerAccountAdmin(SearchByUserLogin, admin.ModelAdmin):
    form = BrokerAccountForm
    list_display = ("id", "user", "asset_class", "exchange", "environment", "label", "status", "key_hint",
                    "created_at")
    list_filter = ("exchange", "asset_class", "environment", "status")
    search_fields = ("label",)
    readonly_fields = ("key_hint", "created_at")

    # An error report of a failed save (mailed to ADMINS) must not carry the typed credentials.
    @method_decorator(sensitive_post_parameters("new_credentials"))
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        creds = form.cleaned_data.get("new_credentials")
        if creds is not None:
            obj.credentials = creds
            obj.key_hint = services._key_hint(creds)
            if change:
                obj.status = BrokerAccount.Status.ACTIVE
        super().save_model(request, obj, form, change)


def _log_out(request, users) -> None:
    for user in users:
        services.log_out_everywhere(user=user)
    messages.info(request, f"Every earlier access and refresh token of {len(users)} user(s) is ended; "
                           "they must log in again.")


@admin.action(description="Log out everywhere (end every token of the selected users)", permissions=["change"])
def log_out_everywhere(modeladmin, request, queryset):
    """An action for the user model's admin: offered on the host's user admin below."""
    _log_out(request, list(queryset))


def offer_log_out_everywhere(site: admin.AdminSite = admin.site) -> None:
    """Adds the action to the admin of the user model registered on `site`, if there is one yet.

    django.contrib.auth registers its UserAdmin before this module is imported (it comes earlier
    in INSTALLED_APPS); a host that registers its own user admin later lists
    `brokers.admin.log_out_everywhere` in that admin's `actions` itself.
    """
    user_admin = site._registry.get(get_user_model())
    if user_admin is not None and log_out_everywhere not in (user_admin.actions or ()):
        user_admin.actions = [*(user_admin.actions or ()), log_out_everywhere]


offer_log_out_everywhere()


@admin.register(TraderProfile)
class TraderProfileAdmin(SearchByUserLogin, admin.ModelAdmin):
    actions = ["log_out_everywhere"]
    list_display = ("user", "live_enabled", "live_enabled_at")
    list_filter = ("live_enabled",)
    readonly_fields = ("live_enabled_at",)

    def save_model(self, request, obj, form, change):
        services.set_live_enabled(user=obj.user, enabled=obj.live_enabled)

    @admin.action(description="Log out everywhere (end every token of the selected users)", permissions=["change"])
    def log_out_everywhere(self, request, queryset):
        _log_out(request, [profile.user for profile in queryset.select_related("user")])


@admin.register(SimQuote)
class SimQuoteAdmin(admin.ModelAdmin):
    list_display = ("asset_class", "symbol", "price", "updated_at")
    search_fields = ("symbol",)

    def save_model(self, request, obj, form, change):
        from brokers.sim_exchange import set_quote

        changed = set_quote(obj.asset_class, obj.symbol, obj.price)
        messages.info(request, f"{obj.symbol} quoted at {obj.price}; {changed} resting simulator orders changed.")
