"""risk/admin.py and risk/models.py: operators set per-user limits within the allowed ranges."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from risk.admin import DailyBaselineAdmin, RiskProfileAdmin
from risk.models import DailyBaseline, RiskProfile

D = Decimal
pytestmark = pytest.mark.django_db


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("ana")


@pytest.fixture
def profile_form(rf, admin_user):
    request = rf.get("/admin/risk/riskprofile/add/")
    request.user = admin_user
    return RiskProfileAdmin(RiskProfile, admin.site).get_form(request)


# --- model validation ----------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0.01", "0.015", "0.02"])
def test_trade_risk_limit_from_one_to_two_percent_is_valid(user, value):
    RiskProfile(user=user, max_trade_risk_pct=D(value)).full_clean()


@pytest.mark.parametrize("value", ["0.0099", "0.0201", "0.05"])
def test_trade_risk_limit_outside_one_to_two_percent_is_invalid(user, value):
    with pytest.raises(ValidationError) as caught:
        RiskProfile(user=user, max_trade_risk_pct=D(value)).full_clean()
    assert "max_trade_risk_pct" in caught.value.message_dict


def test_blank_limits_are_valid(user):
    RiskProfile(user=user).full_clean()


@pytest.mark.parametrize("field", ["unprotected_loss_pct", "daily_loss_limit_pct"])
def test_zero_loss_fractions_are_invalid(user, field):
    with pytest.raises(ValidationError) as caught:
        RiskProfile(user=user, **{field: D("0")}).full_clean()
    assert field in caught.value.message_dict


def test_database_refuses_a_trade_risk_limit_above_two_percent(user):
    with pytest.raises(IntegrityError):
        RiskProfile.objects.create(user=user, max_trade_risk_pct=D("0.03"))


# --- admin ---------------------------------------------------------------------------------------

def test_admin_form_refuses_a_trade_risk_limit_above_two_percent(user, profile_form):
    form = profile_form(data={"user": user.pk, "max_trade_risk_pct": "0.03"})
    assert "max_trade_risk_pct" in form.errors


def test_admin_form_saves_blank_limits(user, profile_form):
    form = profile_form(data={"user": user.pk})
    assert form.is_valid(), form.errors


@pytest.mark.parametrize(("field", "setting"), [("max_trade_risk_pct", "RISK_MAX_TRADE_RISK_PCT"),
                                                ("unprotected_loss_pct", "RISK_UNPROTECTED_LOSS_PCT"),
                                                ("daily_loss_limit_pct", "RISK_DAILY_LOSS_LIMIT_PCT")])
def test_admin_help_text_says_blank_is_the_default_and_shows_it(rf, admin_user, settings, field, setting, equity_orders):
    setattr(equity_orders, setting, D("0.0123"))
    request = rf.get("/admin/risk/riskprofile/add/")
    request.user = admin_user
    help_text = RiskProfileAdmin(RiskProfile, admin.site).get_form(request).base_fields[field].help_text
    assert "Blank = the default, 0.0123 (1.23 %" in help_text


def test_daily_baselines_are_read_only_in_admin(rf, admin_user):
    request = rf.get("/admin/risk/dailybaseline/")
    request.user = admin_user
    baseline_admin = DailyBaselineAdmin(DailyBaseline, admin.site)
    assert not (baseline_admin.has_add_permission(request) or baseline_admin.has_change_permission(request)
                or baseline_admin.has_delete_permission(request))


# --- DailyBaseline -------------------------------------------------------------------------------

def test_first_snapshot_of_the_day_is_kept_when_a_later_one_arrives():
    DailyBaseline.objects.first_of_day(connection_id=1, day="2026-11-25", equity=D("10000"))
    later = DailyBaseline.objects.first_of_day(connection_id=1, day="2026-11-25", equity=D("9000"))
    assert later.equity == D("10000")
