"""Operators set a user's risk limits here (SPEC.md: configurable per user in admin, defaults from settings)."""

from __future__ import annotations

from django.contrib import admin

from brokers.admin import SearchByUserLogin
from brokers.conf import conf

from risk.models import MAX_TRADE_RISK_CAP, MIN_TRADE_RISK_PCT, DailyBaseline, RiskProfile
from risk.rules import pct

# field -> (what it means, the settings default it falls back to)
_HELP = {
    "max_trade_risk_pct": ("Fraction of equity one trade may risk, from {low} to {high}.", "RISK_MAX_TRADE_RISK_PCT"),
    "unprotected_loss_pct": ("Assumed adverse move of an order without a stop loss, as a fraction.",
                             "RISK_UNPROTECTED_LOSS_PCT"),
    "daily_loss_limit_pct": ("Fraction of equity lost since the start of the day that stops new exposure.",
                             "RISK_DAILY_LOSS_LIMIT_PCT"),
}


def help_text_for(field_name: str) -> str:
    """The field's meaning plus its current default, read from settings when the form is built."""
    meaning, setting = _HELP[field_name]
    default = getattr(conf, setting)
    meaning = meaning.format(low=MIN_TRADE_RISK_PCT, high=MAX_TRADE_RISK_CAP)
    return f"{meaning} Blank = the default, {default} ({pct(default)} %, EQUITY_ORDERS['{setting}'])."


@admin.register(RiskProfile)
class RiskProfileAdmin(SearchByUserLogin, admin.ModelAdmin):
    list_display = ("user", "max_trade_risk_pct", "unprotected_loss_pct", "daily_loss_limit_pct")
    raw_id_fields = ("user",)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if formfield is not None and db_field.name in _HELP:
            formfield.help_text = help_text_for(db_field.name)
        return formfield


@admin.register(DailyBaseline)
class DailyBaselineAdmin(admin.ModelAdmin):
    """Read-only: the first equity snapshot of each UTC day, written by the daily_loss rule."""

    list_display = ("connection_id", "day", "equity")
    list_filter = ("day",)
    search_fields = ("connection_id",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
