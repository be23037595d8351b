"""The kill switch (SPEC.md "Trader controls"): per user (all asset classes or one) and global, modes
halted and reducing, `until`, set and released through the API, admin and `manage.py kill_switch`;
403 TRADING_HALTED from the kill_switch rule, the first of gate 4; every change audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.models import BrokerOrderEvent
from risk.models import KillSwitch
from tests.equity.helpers import assert_error, crypto_limit, crypto_market, place
from tests.factories import BrokerAccountFactory, UserFactory

pytestmark = pytest.mark.django_db

KS = "/api/equity/kill-switch"


def halt(client, **body):
    return client.put(KS, {"mode": "halted", **body}, format="json")


def buy_then_hold(client, qty=0.02):
    """A filled market buy: a position that a sell can reduce."""
    assert place(client, crypto_market(qty=qty)).status_code == 201


# --- what each mode refuses and lets through, per scope ---------------------------------------------

SCOPES = {
    "user, every asset class": lambda client: {"asset_class": None},
    "user, crypto": lambda client: {"asset_class": "crypto"},
}


@pytest.mark.parametrize("scope", SCOPES)
def test_halted_refuses_every_placement_even_a_reducing_sell(api_client, sim_crypto, scope):
    buy_then_hold(api_client)
    assert halt(api_client, reason="lunch", **SCOPES[scope](api_client)).status_code == 200
    body = assert_error(place(api_client, crypto_market()), 403, "TRADING_HALTED")
    assert body["detail"].startswith("kill_switch: trading is halted (your switch for ")
    assert "lunch" in body["detail"] and "alice" in body["detail"]
    assert_error(place(api_client, crypto_market(side="sell", qty=0.01)), 403, "TRADING_HALTED")
    refusal = BrokerOrderEvent.objects.filter(event_type="rejected").latest("id")
    assert (refusal.error_code, refusal.risk_rule) == ("TRADING_HALTED", "kill_switch")


@pytest.mark.parametrize("scope", SCOPES)
def test_reducing_refuses_new_exposure_and_lets_a_reducing_sell_through(api_client, sim_crypto, scope):
    buy_then_hold(api_client, qty=0.02)
    assert halt(api_client, **{"mode": "reducing", **SCOPES[scope](api_client)}).status_code == 200
    body = assert_error(place(api_client, crypto_market()), 403, "TRADING_HALTED")
    assert "reducing" in body["detail"] and "only orders that reduce a position" in body["detail"]
    # selling more than is held would open a short: not reducing
    assert_error(place(api_client, crypto_market(side="sell", qty=0.05)), 403, "TRADING_HALTED")
    assert place(api_client, crypto_market(side="sell", qty=0.01)).status_code == 201


@pytest.mark.parametrize("mode", ["halted", "reducing"])
def test_reads_and_cancels_are_never_blocked(api_client, sim_crypto, mode):
    resting = place(api_client, crypto_limit()).json()
    assert halt(api_client, mode=mode).status_code == 200
    assert api_client.get("/api/equity/orders", {"asset_class": "crypto"}).status_code == 200
    assert api_client.get(f"/api/equity/orders/{resting['order_id']}", {"asset_class": "crypto"}).status_code == 200
    assert api_client.get("/api/equity/positions", {"asset_class": "crypto"}).status_code == 200
    assert api_client.get("/api/equity/account", {"asset_class": "crypto"}).status_code == 200
    assert api_client.delete(f"/api/equity/orders/{resting['order_id']}?asset_class=crypto").status_code == 204


def test_a_switch_for_one_asset_class_leaves_the_others_alone(api_client, sim_crypto):
    assert halt(api_client, asset_class="us_equity").status_code == 200
    assert place(api_client, crypto_market()).status_code == 201


def test_one_users_switch_never_stops_another_user(make_client, user, other_user, quotes):
    BrokerAccountFactory(user=user, asset_class="crypto")
    BrokerAccountFactory(user=other_user, asset_class="crypto")
    assert halt(make_client(user)).status_code == 200
    assert place(make_client(other_user), crypto_market()).status_code == 201


@pytest.mark.parametrize("mode", ["halted", "reducing"])
def test_the_global_switch_stops_every_user_until_an_operator_releases_it(make_client, user, other_user, quotes,
                                                                           mode):
    for who in (user, other_user):
        BrokerAccountFactory(user=who, asset_class="crypto")
    call_command("kill_switch", "on", "--all", "--mode", mode, "--reason", "exchange incident")
    for who in (user, other_user):
        body = assert_error(place(make_client(who), crypto_market()), 403, "TRADING_HALTED")
        assert "global switch for all asset classes" in body["detail"] and "exchange incident" in body["detail"]
    listed = make_client(user).get(KS).json()["items"]
    assert [(s["scope"], s["mode"]) for s in listed] == [("global", mode)]
    # a user cannot release the global switch: DELETE releases only their own
    assert make_client(user).delete(KS).status_code == 204
    assert_error(place(make_client(user), crypto_market()), 403, "TRADING_HALTED")
    call_command("kill_switch", "off", "--all")
    assert place(make_client(user), crypto_market()).status_code == 201
    assert [e.user_id for e in BrokerOrderEvent.objects.filter(event_type__startswith="kill_switch")] == [None, None]


def test_no_connection_is_still_broker_not_configured_gate_3_before_the_switch(api_client, user):
    assert halt(api_client).status_code == 200
    assert_error(place(api_client, crypto_market()), 403, "BROKER_NOT_CONFIGURED")


# --- until ------------------------------------------------------------------------------------------

def test_before_until_the_user_cannot_release_or_weaken_their_switch(api_client, sim_crypto):
    until = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    assert halt(api_client, until=until.isoformat()).status_code == 200
    body = assert_error(api_client.delete(KS), 422, "VALIDATION_ERROR")
    assert until.strftime("%Y-%m-%dT%H:%M:%SZ") in body["detail"]
    assert_error(halt(api_client, mode="reducing", until=until.isoformat()), 422, "VALIDATION_ERROR")
    assert_error(halt(api_client, until=(until - timedelta(hours=1)).isoformat()), 422, "VALIDATION_ERROR")
    # making it stricter or longer is fine
    assert halt(api_client, until=(until + timedelta(hours=1)).isoformat()).status_code == 200
    assert_error(place(api_client, crypto_market()), 403, "TRADING_HALTED")


def test_an_operator_releases_a_switch_before_its_until(api_client, sim_crypto):
    assert halt(api_client, until=(timezone.now() + timedelta(days=1)).isoformat()).status_code == 200
    call_command("kill_switch", "alice", "off", "--operator", "root")
    assert not KillSwitch.objects.exists()
    assert place(api_client, crypto_market()).status_code == 201
    release = BrokerOrderEvent.objects.get(event_type="kill_switch_released")
    assert release.request_body["released_by"] == "operator root"


def test_after_until_the_switch_lapses_and_its_user_may_release_it(api_client, make_client, user, sim_crypto):
    assert halt(api_client, until=(timezone.now() + timedelta(minutes=30)).isoformat()).status_code == 200
    with time_machine.travel(timezone.now() + timedelta(minutes=31), tick=False):
        api_client = make_client(user)  # a fresh token: the first one has expired by then
        assert place(api_client, crypto_market()).status_code == 201
        assert api_client.get(KS).json() == {"items": []}
        assert api_client.delete(KS).status_code == 204


def test_a_user_cannot_release_or_change_a_switch_an_operator_set(api_client, sim_crypto):
    call_command("kill_switch", "alice", "on", "--mode", "reducing", "--reason", "margin call")
    body = assert_error(api_client.delete(KS), 422, "VALIDATION_ERROR")
    assert "operator" in body["detail"]
    assert_error(halt(api_client), 422, "VALIDATION_ERROR")
    assert KillSwitch.objects.get().mode == "reducing"


def test_until_in_the_past_is_a_validation_error(api_client, sim_crypto):
    assert_error(halt(api_client, until=(timezone.now() - timedelta(minutes=1)).isoformat()), 400,
                 "VALIDATION_ERROR")


# --- the API's shapes, audit and cancel_open -----------------------------------------------------------

def test_put_answers_the_switch_and_get_lists_it(api_client, sim_crypto):
    resp = halt(api_client, asset_class="crypto", reason="tilt")
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert {k: body[k] for k in ("mode", "asset_class", "scope", "reason", "until", "set_by", "cancel_all")} == {
        "mode": "halted", "asset_class": "crypto", "scope": "user", "reason": "tilt", "until": None,
        "set_by": "alice", "cancel_all": None}
    assert body["set_at"].endswith("Z")
    assert api_client.get(KS).json()["items"] == [{k: v for k, v in body.items() if k != "cancel_all"}]


def test_setting_and_releasing_are_audit_events(api_client, sim_crypto):
    halt(api_client, asset_class="crypto", reason="tilt")
    assert api_client.delete(f"{KS}?asset_class=crypto").status_code == 204
    set_row, released = BrokerOrderEvent.objects.filter(event_type__startswith="kill_switch").order_by("id")
    assert (set_row.event_type, set_row.user_id, set_row.asset_class, set_row.status) == (
        "kill_switch_set", api_client.user.pk, "crypto", "halted")
    assert set_row.request_body["reason"] == "tilt" and set_row.request_id
    assert (released.event_type, released.status, released.request_body["released_by"]) == (
        "kill_switch_released", "released", "alice")


def test_cancel_open_on_set_cancels_the_open_orders_it_covers(api_client, sim_crypto):
    first = place(api_client, crypto_limit()).json()
    second = place(api_client, crypto_limit(limit_price=31000)).json()
    filled = place(api_client, crypto_market()).json()
    body = halt(api_client, cancel_open=True).json()
    assert sorted(body["cancel_all"]["canceled"]) == sorted([first["order_id"], second["order_id"]])
    assert body["cancel_all"]["failed"] == []
    assert filled["order_id"] not in body["cancel_all"]["canceled"]
    listed = api_client.get("/api/equity/orders", {"asset_class": "crypto", "status": "open"}).json()
    assert listed["items"] == []


def test_the_command_takes_the_login_and_refuses_unknown_users(sim_crypto):
    with pytest.raises(CommandError):
        call_command("kill_switch", "nobody", "on")
    with pytest.raises(CommandError):
        call_command("kill_switch", "on")
    call_command("kill_switch", "alice", "on", "--asset-class", "crypto", "--until", "2099-01-01T00:00:00Z")
    switch = KillSwitch.objects.get()
    assert (switch.user.username, switch.asset_class, switch.set_by_operator) == ("alice", "crypto", True)


# --- admin --------------------------------------------------------------------------------------------

@pytest.fixture
def operator_client(client):
    root = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(root)
    return client


def test_operators_see_every_switch_in_admin_and_set_and_release_them_audited(operator_client, api_client,
                                                                               sim_crypto, other_user):
    halt(api_client, until=(timezone.now() + timedelta(days=1)).isoformat(), reason="mine")
    call_command("kill_switch", "on", "--all", "--reason", "global one")
    page = operator_client.get("/admin/risk/killswitch/?in_force=yes")
    assert page.status_code == 200
    assert b"mine" in page.content and b"global one" in page.content
    added = operator_client.post("/admin/risk/killswitch/add/", {
        "user": other_user.pk, "asset_class": "crypto", "mode": "reducing", "reason": "from admin", "until": ""})
    assert added.status_code == 302, added.content[:2000]
    made = KillSwitch.objects.get(user=other_user)
    assert (made.set_by, made.set_by_operator) == ("operator root", True)
    mine = KillSwitch.objects.get(user=api_client.user)
    deleted = operator_client.post(f"/admin/risk/killswitch/{mine.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    assert not KillSwitch.objects.filter(user=api_client.user).exists()  # before its until: operators may
    kinds = list(BrokerOrderEvent.objects.filter(event_type__startswith="kill_switch").order_by("id")
                 .values_list("event_type", "user_id"))
    assert kinds == [("kill_switch_set", api_client.user.pk), ("kill_switch_set", None),
                     ("kill_switch_set", other_user.pk), ("kill_switch_released", api_client.user.pk)]
