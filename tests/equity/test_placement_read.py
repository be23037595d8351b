"""Gates 3 and 4 read their rows once (equity.gates.read_for_placement, issue 17): the connection,
the user's RiskProfile and the covering kill switches in one raw statement. Its columns are the
models', its rows are what the ORM reads (BotRegistry.connection_for_user, RiskManager.for_user,
KillSwitch.objects.covering), and the gates answer as they did."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.test.utils import CaptureQueriesContext

from audit.services import RequestMeta
from brokers.models import BrokerAccount
from brokers.registry import BotRegistry
from brokers.types import AssetClass, OrderRequest, OrderType, Side, TimeInForce
from equity import controls, gates
from equity.gates import read_for_placement
from risk.manager import RiskManager
from risk.models import KillSwitch, RiskProfile
from risk.rules import KillSwitchRule, RiskContext, RiskLimits
from tests.equity.helpers import assert_error, crypto_limit, place
from tests.factories import BrokerAccountFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 4, 12, 0, 0, 250000, tzinfo=UTC)  # with microseconds: stored as text on SQLite
D = Decimal


def _statement():
    read_for_placement(user_id=0, asset_class="crypto", live=False, now=NOW)  # builds it for this connection
    return gates._statements[connections[DEFAULT_DB_ALIAS]]


# --- the statement's columns are the models' --------------------------------------------------------

def test_the_one_read_selects_every_column_of_the_three_models_and_filters_on_theirs():
    statement = _statement()
    sql = statement.sql
    quote = connection.ops.quote_name
    select = sql[len("SELECT "):sql.index(" FROM ")]
    read = [tuple(col.split(".", 1)) for col in select.split(", ")]
    expected = [(alias, quote(f.column)) for alias, model in (("c", BrokerAccount), ("p", RiskProfile),
                                                               ("k", KillSwitch))
                for f in model._meta.concrete_fields]
    assert read == expected
    tables = re.findall(r'(?:FROM|JOIN) ("\w+") (\w)\b', sql)
    assert tables == [(quote(BrokerAccount._meta.db_table), "c"), (quote(RiskProfile._meta.db_table), "p"),
                      (quote(KillSwitch._meta.db_table), "k")]
    columns = {alias: {f.column for f in model._meta.concrete_fields}
               for alias, model in (("c", BrokerAccount), ("p", RiskProfile), ("k", KillSwitch))}
    for alias, column in re.findall(r'\b([cpk])\."(\w+)"', sql):
        assert column in columns[alias], (alias, column)
    assert sql.count("%s") == 6  # every value bound, none in the text


def test_the_rows_read_are_the_orms_rows_field_for_field(user):
    account = BrokerAccountFactory(user=user, asset_class="crypto", label="main", key_hint="abcd",
                                   credentials={"api_key": "k", "secret": "s", "nested": [1, "2"]})
    profile = RiskProfile.objects.create(user=user, max_trade_risk_pct=D("0.015"), daily_loss_limit_pct=D("0.0333"))
    switch = KillSwitch.objects.create(user=user, asset_class="crypto", mode="reducing", reason="lunch",
                                       until=NOW + timedelta(hours=1, microseconds=7), set_by="ops",
                                       set_by_operator=True, set_at=NOW - timedelta(minutes=5))
    rows = read_for_placement(user_id=user.pk, asset_class="crypto", live=False, now=NOW)
    for got, orm in ((rows.connection, BrokerAccount.objects.get(pk=account.pk)),
                     (rows.profile, RiskProfile.objects.get(pk=profile.pk)),
                     (rows.kill_switches[0], KillSwitch.objects.get(pk=switch.pk))):
        for f in type(orm)._meta.concrete_fields:
            mine, theirs = getattr(got, f.attname), getattr(orm, f.attname)
            assert (mine, type(mine)) == (theirs, type(theirs)), f.name
        assert got._state.adding is False and got._state.db == orm._state.db
    assert rows.connection.credentials == {"api_key": "k", "secret": "s", "nested": [1, "2"]}  # decrypted
    assert rows.kill_switches[0].until.tzinfo is not None


def test_the_connection_is_the_registrys_for_asset_class_and_environment(user, other_user):
    paper = BrokerAccountFactory(user=user, asset_class="crypto", environment="paper")
    live = BrokerAccountFactory(user=user, asset_class="crypto", environment="live")
    BrokerAccountFactory(user=other_user, asset_class="us_equity")
    for asset_class, is_live, expected in (("crypto", False, paper), ("crypto", True, live),
                                           ("us_equity", False, None)):
        rows = read_for_placement(user_id=user.pk, asset_class=asset_class, live=is_live, now=NOW)
        assert (rows.connection.pk if rows.connection else None) == (expected.pk if expected else None)
        if expected is not None:
            assert BotRegistry.connection_for_user(user.pk, asset_class, live=is_live).pk == expected.pk


# --- the kill switches read are exactly `covering`'s -------------------------------------------------

def _switch(user, asset_class="", mode="halted", until=None, set_by="alice", operator=False, reason=""):
    return KillSwitch.objects.create(user=user, asset_class=asset_class, mode=mode, until=until, set_by=set_by,
                                     set_by_operator=operator, reason=reason, set_at=NOW - timedelta(hours=1))


GRIDS = {
    # (user's "", user's crypto, user's us_equity, global "", global crypto, other user's "") -> kwargs or None
    "an operator's switch, the user's own, another asset class's": dict(
        mine_all=dict(mode="reducing", set_by="ops", operator=True, until=NOW + timedelta(days=1), reason="audit"),
        mine_crypto=dict(mode="halted"), mine_us=dict(mode="halted"), other=dict(mode="halted")),
    "lapsed exactly at until, lapsed before, in force to a microsecond after": dict(
        mine_all=dict(until=NOW), mine_crypto=dict(until=NOW - timedelta(seconds=1), mode="reducing"),
        global_all=dict(until=NOW + timedelta(microseconds=1), set_by="root", operator=True)),
    "global for all and for crypto, none of the user's": dict(
        global_all=dict(mode="reducing", set_by="ops", operator=True, reason="maintenance"),
        global_crypto=dict(mode="halted", until=NOW + timedelta(minutes=5), set_by="ops", operator=True),
        global_us=dict(mode="halted", set_by="ops", operator=True)),
    "every scope at once": dict(
        mine_all=dict(mode="reducing"), mine_crypto=dict(mode="reducing"), mine_us=dict(),
        global_all=dict(mode="reducing"), global_crypto=dict(mode="halted", until=NOW), global_us=dict(),
        other=dict()),
    "none": {},
}


def _grid(user, other_user, grid):
    scopes = {"mine_all": (user, ""), "mine_crypto": (user, "crypto"), "mine_us": (user, "us_equity"),
              "global_all": (None, ""), "global_crypto": (None, "crypto"), "global_us": (None, "us_equity"),
              "other": (other_user, "")}
    for name, kwargs in grid.items():
        owner, asset_class = scopes[name]
        _switch(owner, asset_class, **kwargs)


class _NoBroker:  # halted needs no snapshot; a reducing buy on the simulator needs none either
    exchange = "sim"

    def __getattr__(self, name):
        raise AssertionError(f"the kill_switch rule called the broker: {name}")


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("asset_class", ["crypto", "us_equity"])
def test_the_switches_read_are_exactly_the_covering_ones_and_judged_alike(user, other_user, grid, asset_class):
    BrokerAccountFactory(user=user, asset_class=asset_class)
    _grid(user, other_user, GRIDS[grid])
    rows = read_for_placement(user_id=user.pk, asset_class=asset_class, live=False, now=NOW)
    covering = KillSwitch.objects.covering(user_id=user.pk, asset_class=asset_class, now=NOW).order_by("pk")
    assert [s.pk for s in rows.kill_switches] == [s.pk for s in covering]
    order = OrderRequest(asset_class=AssetClass(asset_class), symbol="BTC/USD" if asset_class == "crypto" else "AAPL",
                         side=Side.BUY, qty=D("1"), order_type=OrderType.LIMIT, time_in_force=TimeInForce.GTC,
                         broker_client_id="x", limit_price=D("10"))
    judged = []
    for switches in (rows.kill_switches, None):  # handed down, and read by the rule itself as before
        ctx = RiskContext(order=order, adapter=_NoBroker(), exchange="sim", connection_id=1, now=NOW,
                          limits=RiskLimits.defaults(), user_id=user.pk, kill_switches=switches)
        result = KillSwitchRule().evaluate(ctx)
        judged.append((result.ok, result.numbers, result.error and (result.error.code, result.error.detail)))
    assert judged[0] == judged[1]


def test_an_operators_switch_shows_who_set_it_and_until_in_a_what_if(make_client, user, sim_crypto):
    until = (NOW + timedelta(hours=2)).replace(microsecond=0)
    with time_machine.travel(NOW, tick=False):
        api_client = make_client(user)  # a token issued at the travelled time
        controls.set_kill_switch(user=None, mode="halted", reason="exchange outage", until=until, set_by="ops-root",
                                 by_operator=True, meta=RequestMeta())
        checks = {c["name"]: c for c in api_client.post("/api/equity/orders/check", crypto_limit(),
                                                        format="json").json()["checks"]}
        body = assert_error(place(api_client, crypto_limit()), 403, "TRADING_HALTED")
    switch = checks["kill_switch"]
    assert (switch["ok"], switch["mode"], switch["scope"], switch["set_by"], switch["until"]) == (
        False, "halted", "global", "ops-root", "2026-12-04T14:00:00Z")
    assert "set by ops-root: exchange outage" in body["detail"]


# --- the profile read: blank fields take the defaults ------------------------------------------------

@pytest.mark.parametrize("fields", [{}, {"max_trade_risk_pct": D("0.015")},
                                    {"unprotected_loss_pct": D("0.2"), "daily_loss_limit_pct": D("0.03")}, None])
def test_a_profile_with_blank_fields_takes_the_defaults(user, fields):
    BrokerAccountFactory(user=user)
    if fields is not None:
        RiskProfile.objects.create(user=user, **fields)
    rows = read_for_placement(user_id=user.pk, asset_class="crypto", live=False, now=NOW)
    assert (rows.profile is None) == (fields is None)
    defaults = RiskLimits.defaults()
    expected = RiskLimits(max_trade_risk_pct=(fields or {}).get("max_trade_risk_pct", defaults.max_trade_risk_pct),
                          unprotected_loss_pct=(fields or {}).get("unprotected_loss_pct",
                                                                  defaults.unprotected_loss_pct),
                          daily_loss_limit_pct=(fields or {}).get("daily_loss_limit_pct",
                                                                  defaults.daily_loss_limit_pct))
    assert RiskManager.for_profile(rows.profile, user_id=user.pk).limits == expected
    assert RiskManager.for_user(user).limits == expected


def test_another_users_profile_is_not_read(user, other_user):
    BrokerAccountFactory(user=user)
    RiskProfile.objects.create(user=other_user, max_trade_risk_pct=D("0.01"))
    assert read_for_placement(user_id=user.pk, asset_class="crypto", live=False, now=NOW).profile is None


# --- gate 3 first, whatever switch is set ------------------------------------------------------------

@pytest.mark.parametrize("owner", ["user", "global"])
def test_no_connection_with_a_kill_switch_set_is_still_gate_3s_refusal(api_client, user, owner):
    _switch(user if owner == "user" else None, until=None)
    rows = read_for_placement(user_id=user.pk, asset_class="crypto", live=False, now=NOW)
    assert (rows.connection, rows.profile, rows.kill_switches) == (None, None, ())
    body = assert_error(place(api_client, crypto_limit()), 403, "BROKER_NOT_CONFIGURED")
    assert body["detail"].startswith("No paper broker connection for crypto; add one with POST ")
    what_if = api_client.post("/api/equity/orders/check", crypto_limit(), format="json").json()
    assert [c["name"] for c in what_if["checks"]][-1] == "broker_connection"
    assert (what_if["code"], what_if["detail"]) == ("BROKER_NOT_CONFIGURED", body["detail"])


def test_an_invalid_connection_with_a_kill_switch_set_is_still_gate_3s_refusal(api_client, user, sim_crypto):
    BrokerAccount.objects.filter(pk=sim_crypto.pk).update(status=BrokerAccount.Status.INVALID)
    _switch(user)
    body = assert_error(place(api_client, crypto_limit()), 403, "BROKER_NOT_CONFIGURED")
    assert "refused this connection's credentials" in body["detail"]


# --- one statement for gates 3 and 4's own rows ------------------------------------------------------

def test_gates_3_and_4_read_their_rows_in_one_statement(api_client, user, sim_crypto, monkeypatch):
    RiskProfile.objects.create(user=user, max_trade_risk_pct=D("0.02"))
    _switch(user, mode="reducing", asset_class="us_equity")  # not covering: the order is a crypto one
    from brokers.adapters.sim import SimAdapter

    snapshot_sql = []
    original = SimAdapter.account

    def account(self):  # the adapter's own statements are not the gates'
        with CaptureQueriesContext(connection) as inner:
            result = original(self)
        snapshot_sql.extend(q["sql"] for q in inner.captured_queries)
        return result

    monkeypatch.setattr(SimAdapter, "account", account)
    from equity import services

    evaluate = services.evaluate_placement
    captured = {}

    def counted(**kwargs):
        with CaptureQueriesContext(connection) as ctx:
            result = evaluate(**kwargs)
        captured["sql"] = [q["sql"] for q in ctx.captured_queries]
        return result

    assert place(api_client, crypto_limit()).status_code == 201  # waffle has the flag in its cache from now on
    monkeypatch.setattr(services, "evaluate_placement", counted)
    assert place(api_client, crypto_limit()).status_code == 201
    own = [sql for sql in captured["sql"] if sql not in snapshot_sql]
    assert len(own) == 1, own
    assert KillSwitch._meta.db_table in own[0] and RiskProfile._meta.db_table in own[0]


def test_a_switch_set_after_one_placement_stops_the_next(api_client, user, sim_crypto):
    assert place(api_client, crypto_limit()).status_code == 201
    _switch(user, reason="now")
    assert_error(place(api_client, crypto_limit()), 403, "TRADING_HALTED")
    KillSwitch.objects.all().delete()
    assert place(api_client, crypto_limit()).status_code == 201
    BrokerAccount.objects.all().delete()
    assert_error(place(api_client, crypto_limit()), 403, "BROKER_NOT_CONFIGURED")


def test_the_registry_and_the_one_read_refuse_a_missing_connection_with_the_same_words(user):
    with pytest.raises(Exception) as registry:
        BotRegistry.connection_for_user(user.pk, "crypto", live=True)
    assert str(registry.value) == str(BotRegistry.not_configured("crypto", live=True))
