"""The simulator's hot path in raw SQL (issue 17): what its statements read and write is what the
ORM would, the resting buy's one statement and every fallback to the full path, and the
conditional reservation under real concurrency (PostgreSQL).

Prices as in test_sim_exchange: BTC/USD is quoted at 100 and accounts start with 10000 USD.
"""

from __future__ import annotations

import re
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
import time_machine
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from brokers import calendars, sim_exchange
from brokers.errors import BrokerRejected, InsufficientFunds
from brokers.models import BrokerAccount, SimAccount, SimOrder, SimPosition, SimQuote
from brokers.registry import build_adapter
from brokers.sim_exchange import set_quote
from brokers.types import AssetClass, Bracket, OrderStatus, Side, TimeInForce
from tests.brokers.test_sim_exchange import limit, make_connection, make_sim, market, stop

pytestmark = pytest.mark.django_db

POSTGRES = connection.vendor == "postgresql"
TUESDAY_NOON_UTC = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TRANSACTION_CONTROL = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT", "BEGIN", "COMMIT", "ROLLBACK")


@pytest.fixture
def sim():
    set_quote("crypto", "BTC/USD", "100")
    return make_sim()


def account_id_of(adapter) -> int:
    adapter.account()  # opens the simulator account
    return adapter._account_id


def statements(ctx) -> list[str]:
    """The statements that did work (not the savepoints a test's own transaction adds)."""
    return [q["sql"] for q in ctx.captured_queries if not q["sql"].startswith(TRANSACTION_CONTROL)]


def place_counted(adapter, request):
    with CaptureQueriesContext(connection) as ctx:
        placed = adapter.place_order(request)
    return placed, statements(ctx)


def row_of(broker_order_id: str) -> dict:
    row = SimOrder.objects.filter(broker_order_id=broker_order_id).values().get()
    return {k: v for k, v in row.items() if k not in ("id", "broker_order_id", "broker_client_id")}


def stored_text(broker_order_id: str) -> dict:
    """The row as the database holds it, every column as text (exponents, time zones and all)."""
    columns = [f.column for f in SimOrder._meta.concrete_fields
               if f.column not in ("id", "broker_order_id", "broker_client_id")]
    cast = "::text" if POSTGRES else ""
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT {", ".join(f"{connection.ops.quote_name(c)}{cast}" for c in columns)} '
                       f'FROM {SimOrder._meta.db_table} WHERE broker_order_id = %s', [broker_order_id])
        return dict(zip(columns, cursor.fetchone(), strict=True))


# --- the columns of the raw statements are the models' -----------------------------------------

def _columns_in(sql: str, table: str) -> list[str]:
    return re.findall(rf'{re.escape(table)}\."(\w+)"', sql)


def test_the_resting_insert_writes_every_column_of_sim_order_but_its_id():
    sql = sim_exchange._resting_sql(">")
    inserted = re.search(r'INSERT INTO "brokers_simorder" \(([^)]*)\)', sql).group(1)
    assert [c.strip('"') for c in inserted.split(", ")] == [
        f.column for f in SimOrder._meta.concrete_fields if not f.primary_key]
    # One typed parameter per column, nothing else in the SELECT that feeds the INSERT.
    select = sql.split(") SELECT ", 1)[1].split(" FROM reserved", 1)[0]
    assert select.count("%s") == len(SimOrder._meta.concrete_fields) - 1


def test_the_resting_statement_reserves_on_sim_account_and_locks_the_quote():
    sql = sim_exchange._resting_sql("<")
    account, quote = SimAccount._meta, SimQuote._meta
    assert (f'UPDATE "{account.db_table}" SET "{account.get_field("reserved_cash").column}" = '
            f'"{account.get_field("reserved_cash").column}" + %s') in sql
    assert (f'"{account.get_field("cash").column}" - "{account.get_field("reserved_cash").column}" >= %s') in sql
    assert f'FROM "{quote.db_table}" WHERE "{quote.get_field("asset_class").column}" = %s' in sql
    assert sql.index("FOR SHARE") < sql.index("UPDATE") < sql.index("INSERT")
    assert '"price" < %s' in sql


def test_the_snapshot_reads_every_column_of_the_account_and_of_its_positions():
    sql = sim_exchange._snapshot_sql("id")
    account_part = sql.split("(SELECT", 1)[0]  # before the next-expiry subquery
    position_part = sql.split("LIMIT 1), ", 1)[1].split("(SELECT", 1)[0]  # between it and the quote's
    assert re.findall(r'\ba\."(\w+)"', account_part) == [f.column for f in SimAccount._meta.concrete_fields]
    assert re.findall(r'\bp\."(\w+)"', position_part) == [f.column for f in SimPosition._meta.concrete_fields]
    assert f'FROM "{SimAccount._meta.db_table}" a LEFT JOIN "{SimPosition._meta.db_table}" p' in sql


@pytest.mark.skipif(not POSTGRES, reason="the conditional reservation is PostgreSQL's (SQLite would compare floats)")
def test_the_reservation_returns_every_column_of_the_account():
    set_quote("crypto", "BTC/USD", "100")
    account_id = account_id_of(make_sim())
    with CaptureQueriesContext(connection) as ctx:
        reserved = sim_exchange._reserve_cash(account_id, D("1"))
    returned = ctx.captured_queries[-1]["sql"].split(" RETURNING ", 1)[1]
    assert [c.strip('"') for c in returned.split(", ")] == [f.column for f in SimAccount._meta.concrete_fields]
    assert _fields(reserved) == _fields(SimAccount.objects.get(pk=account_id))
    assert reserved.reserved_cash == 1
    assert sim_exchange._reserve_cash(account_id, D("9999.0000000001")) is None  # one ten-billionth short
    assert sim_exchange._reserve_cash(account_id, D("9999")) is not None  # exactly the buying power


# --- what the raw statements write and read is what the ORM does ----------------------------------

REQUESTS = {
    "gtc limit": lambda: limit("95", qty="0.0001"),
    "day limit": lambda: limit("95", qty="3", time_in_force=TimeInForce.DAY),
    "stop": lambda: stop("120", qty="2"),
    "stop-limit day": lambda: stop("120", stop_limit="125", qty="2", time_in_force=TimeInForce.DAY),
    "bracket": lambda: limit("90", bracket=Bracket(take_profit=D("110"), stop_loss=D("80"), stop_loss_limit=D("79"))),
}


@pytest.mark.parametrize("kind", REQUESTS)
def test_a_resting_buy_stores_the_row_the_full_path_stores(sim, monkeypatch, kind):
    with time_machine.travel(TUESDAY_NOON_UTC, tick=False):
        account_id = account_id_of(sim)
        before = SimAccount.objects.get(pk=account_id).reserved_cash
        fast, sql = place_counted(sim, REQUESTS[kind]())
        after_fast = SimAccount.objects.get(pk=account_id).reserved_cash
        assert len(sql) == (1 if POSTGRES else 3)  # SQLite: quote + account, reservation, INSERT
        with monkeypatch.context() as m:
            m.setattr(sim_exchange, "_place_resting", lambda order, asset_class: False)
            full = sim.place_order(REQUESTS[kind]())
        after_full = SimAccount.objects.get(pk=account_id).reserved_cash
    assert fast.status == full.status == OrderStatus.ACCEPTED
    assert row_of(fast.broker_order_id) == row_of(full.broker_order_id)
    assert stored_text(fast.broker_order_id) == stored_text(full.broker_order_id)
    assert after_fast - before == after_full - after_fast == row_of(fast.broker_order_id)["reserved_cash"] > 0
    stored = SimOrder.objects.get(broker_order_id=fast.broker_order_id)
    assert re.fullmatch(r"sim-[0-9a-f]{32}", stored.broker_order_id) and stored.parent_id is None
    if "day" in kind:
        assert stored.expires_at == calendars.session_close(AssetClass.CRYPTO, TUESDAY_NOON_UTC)
    assert stored.submitted_at == stored.updated_at == TUESDAY_NOON_UTC


def test_the_returned_order_is_the_stored_one(sim):
    placed = sim.place_order(limit("95", time_in_force=TimeInForce.DAY))
    assert sim.get_order(placed.broker_order_id) == placed


def _snapshot_as_the_orm_reads_it(account_id: int):
    account = sim_exchange.account_with_next_expiry(pk=account_id)
    held = sim_exchange.holdings(account_id=account_id, asset_class="crypto")
    return account, held


def _fields(instance) -> list:
    return [(f.attname, getattr(instance, f.attname), type(getattr(instance, f.attname)),
             str(getattr(instance, f.attname))) for f in type(instance)._meta.concrete_fields]


@pytest.mark.parametrize("shape", ["no positions", "positions and a day order", "a quote deleted"])
def test_the_snapshot_is_what_the_orm_reads(sim, shape):
    set_quote("crypto", "ETH/USD", "12.3456789")
    if shape != "no positions":
        sim.place_order(market(qty="0.5"))
        sim.place_order(market(qty="3.25", symbol="ETH/USD"))
        sim.place_order(limit("95", time_in_force=TimeInForce.DAY))
        sim.place_order(limit("15", side=Side.SELL, qty="1", symbol="ETH/USD"))
    if shape == "a quote deleted":
        SimQuote.objects.filter(symbol="ETH/USD").delete()
    account_id = account_id_of(sim)
    account, held = sim_exchange.account_snapshot(pk=account_id, asset_class="crypto")
    orm_account, orm_held = _snapshot_as_the_orm_reads_it(account_id)
    assert _fields(account) == _fields(orm_account)
    assert account.next_expiry == orm_account.next_expiry
    assert (account.next_expiry is None) == (shape == "no positions")
    assert [(_fields(h.position), h.price, str(h.price)) for h in held] == [
        (_fields(h.position), h.price, str(h.price)) for h in orm_held]
    assert len(held) == (0 if shape == "no positions" else 2)
    assert sim_exchange.equity_from(account.cash, held) == sim_exchange.equity_of(account=orm_account,
                                                                                 asset_class="crypto")
    by_connection = sim_exchange.account_snapshot(connection_id=account.connection_id, asset_class="crypto")
    assert _fields(by_connection[0]) == _fields(account)


def test_the_snapshot_of_an_unknown_account_is_none():
    assert sim_exchange.account_snapshot(pk=987654, asset_class="crypto") is None


def test_account_and_positions_are_one_statement_each(sim):
    sim.place_order(market(qty="2"))
    adapter = build_adapter(BrokerAccount.objects.get(pk=SimAccount.objects.get().connection_id))
    for read in (adapter.account, adapter.positions, adapter.account):
        with CaptureQueriesContext(connection) as ctx:
            read()
        assert len(statements(ctx)) == 1


def test_account_equity_is_cash_plus_positions_rounded_per_holding(sim):
    set_quote("crypto", "ETH/USD", "3.3333333333")
    sim.place_order(market(qty="0.3333333333", symbol="ETH/USD"))
    sim.place_order(market(qty="0.7"))
    set_quote("crypto", "ETH/USD", "3.7777777777")
    account = sim.account()
    row = SimAccount.objects.get()
    ten_places = D("1e-10")
    assert account.equity == sim_exchange.equity_of(account=row, asset_class="crypto")
    assert account.equity == row.cash + (D("0.3333333333") * D("3.7777777777")).quantize(ten_places) + 70
    assert account.equity.as_tuple().exponent == -10


def test_a_due_order_is_expired_before_the_snapshot_is_returned(sim):
    with time_machine.travel(TUESDAY_NOON_UTC, tick=False):
        placed = sim.place_order(limit("95", time_in_force=TimeInForce.DAY))
        assert sim.account().buying_power == 10000 - 95
    with time_machine.travel(datetime(2026, 11, 25, 0, 0, 1, tzinfo=UTC), tick=False):
        adapter = make_sim_for(sim)
        assert adapter.account().buying_power == 10000
        assert adapter.get_order(placed.broker_order_id).status == OrderStatus.EXPIRED


def make_sim_for(adapter):
    return build_adapter(BrokerAccount.objects.get(pk=adapter._connection_id))


# --- the resting buy's one statement, and every fallback to the full path -------------------------

def test_a_resting_limit_buy_is_one_statement_on_postgresql(sim):
    account_id_of(sim)
    placed, sql = place_counted(sim, limit("95"))
    assert placed.status == OrderStatus.ACCEPTED
    if POSTGRES:
        assert len(sql) == 1 and sql[0].startswith("WITH quote AS (SELECT")
    else:  # SQLite: the quote and the account in one read, the reservation, the INSERT
        assert len(sql) == 3 and sql[0].startswith("SELECT (SELECT")
    assert sim.account().buying_power == 10000 - 95


@pytest.mark.django_db(transaction=True)
def test_a_resting_limit_buy_in_autocommit_is_one_round_trip_on_postgresql():
    set_quote("crypto", "BTC/USD", "100")
    sim = make_sim()
    account_id_of(sim)
    with CaptureQueriesContext(connection) as ctx:
        placed = sim.place_order(limit("95"))
    sql = [q["sql"] for q in ctx.captured_queries]
    assert placed.status == OrderStatus.ACCEPTED
    # SQLite: BEGIN IMMEDIATE, the quote with the account, the reservation, the INSERT, COMMIT.
    assert len(sql) == (1 if POSTGRES else 5)
    assert SimOrder.objects.get(broker_order_id=placed.broker_order_id).reserved_cash == 95


def test_a_resting_stop_buy_takes_the_one_statement_and_reserves_its_stop(sim):
    account_id_of(sim)
    placed, sql = place_counted(sim, stop("120"))
    assert placed.status == OrderStatus.ACCEPTED and len(sql) == (1 if POSTGRES else 3)
    assert sim.account().buying_power == 10000 - 120


def test_a_marketable_limit_buy_falls_back_and_fills_at_the_quote(sim):
    account_id_of(sim)
    placed, sql = place_counted(sim, limit("105", qty="2"))
    assert placed.status == OrderStatus.FILLED and placed.avg_fill_price == 100
    account = sim.account()
    assert account.cash == 10000 - 200 and account.buying_power == 10000 - 200
    assert {p.symbol: p.qty for p in sim.positions()} == {"BTC/USD": 2}
    if POSTGRES:  # the one statement wrote nothing: the full path then placed it
        assert sql[0].startswith("WITH quote AS") and len(SimOrder.objects.all()) == 1


def test_a_stop_buy_the_quote_has_reached_falls_back_and_triggers_at_once(sim):
    placed = sim.place_order(stop("100"))
    assert placed.status == OrderStatus.FILLED and placed.avg_fill_price == 100
    assert SimOrder.objects.get().triggered


def test_a_resting_buy_beyond_buying_power_falls_back_to_todays_error_and_changes_nothing(sim):
    account_id = account_id_of(sim)
    sim.place_order(limit("95", qty="100"))  # reserves 9500
    with pytest.raises(InsufficientFunds, match=r"^funds: buying power 500.00 USD, order needs 950.00$"):
        sim.place_order(limit("95", qty="10"))
    assert SimAccount.objects.get(pk=account_id).reserved_cash == 9500 and SimOrder.objects.count() == 1


def test_a_resting_buy_of_exactly_the_buying_power_is_placed(sim):
    account_id_of(sim)
    placed = sim.place_order(limit("95", qty="0.5"))
    rest = sim.account().buying_power
    again = sim.place_order(limit("50", qty=str(rest / 50)))  # 9952.50 / 50 = 199.05, exactly
    assert placed.status == again.status == OrderStatus.ACCEPTED and sim.account().buying_power == 0


def test_a_resting_buy_without_a_quote_falls_back_to_todays_error(sim):
    with pytest.raises(BrokerRejected, match=r"^no simulator quote for NOPE/USD; set one with manage.py sim_quote$"):
        sim.place_order(limit("1", symbol="NOPE/USD"))
    assert SimAccount.objects.get().reserved_cash == 0 and not SimOrder.objects.exists()


def test_a_resting_buy_under_a_repeated_client_id_returns_the_first_order_and_reserves_once(sim):
    first = sim.place_order(limit("95", broker_client_id="attempt-1"))
    again = sim.place_order(limit("95", broker_client_id="attempt-1"))
    assert again.broker_order_id == first.broker_order_id
    assert SimOrder.objects.count() == 1 and sim.account().buying_power == 10000 - 95


@pytest.mark.django_db(transaction=True)
def test_a_repeated_client_id_in_autocommit_returns_the_first_order_and_rolls_its_reservation_back():
    set_quote("crypto", "BTC/USD", "100")
    sim = make_sim()
    first = sim.place_order(limit("95", broker_client_id="attempt-1"))
    again = sim.place_order(limit("95", broker_client_id="attempt-1"))
    assert again.broker_order_id == first.broker_order_id
    assert SimAccount.objects.get().reserved_cash == 95 and SimOrder.objects.count() == 1
    assert sim.place_order(limit("90")).status == OrderStatus.ACCEPTED  # the connection is still usable


@pytest.mark.parametrize("tif", [TimeInForce.IOC, TimeInForce.FOK])
def test_a_resting_ioc_or_fok_buy_takes_the_full_path_and_is_canceled(sim, tif):
    placed = sim.place_order(limit("95", time_in_force=tif))
    assert placed.status == OrderStatus.CANCELED and sim.account().buying_power == 10000


def test_a_resting_sell_takes_the_full_path_and_holds_its_shares(sim):
    sim.place_order(market(qty="2"))
    placed = sim.place_order(limit("120", side=Side.SELL, qty="1.5"))
    assert placed.status == OrderStatus.ACCEPTED
    assert SimPosition.objects.get().reserved_qty == D("1.5")
    with pytest.raises(InsufficientFunds, match=r"no shorting: holds 2.00, sell 1.00 \(1.50 already held"):
        sim.place_order(limit("120", side=Side.SELL, qty="1"))


def test_a_market_buy_reserves_by_the_conditional_update_then_fills(sim):
    account_id_of(sim)
    placed, sql = place_counted(sim, market(qty="3"))
    assert placed.status == OrderStatus.FILLED and sim.account().cash == 10000 - 300
    if POSTGRES:
        reservation = [s for s in sql if s.startswith('UPDATE "brokers_simaccount" SET "reserved_cash" = "reserved_cash" +')]
        assert len(reservation) == 1
        assert not [s for s in sql if s.startswith('SELECT "brokers_simaccount"')]  # no SELECT … FOR UPDATE of it


def test_a_resting_buy_is_matched_by_a_later_quote(sim):
    placed = sim.place_order(limit("95", qty="2"))
    assert set_quote("crypto", "BTC/USD", "94") == 1
    assert sim.get_order(placed.broker_order_id).status == OrderStatus.FILLED
    assert sim.account().cash == 10000 - 190 and sim.account().buying_power == 10000 - 190


# --- concurrency (PostgreSQL) ---------------------------------------------------------------------

def _race(conn, requests: list) -> list[str]:
    start = threading.Barrier(len(requests))
    outcomes: list[str] = []

    def place(request):
        try:
            adapter = build_adapter(BrokerAccount.objects.get(pk=conn.pk))
            adapter.account()
            start.wait()
            outcomes.append(adapter.place_order(request).status)
        except InsufficientFunds:
            outcomes.append("insufficient_funds")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=place, args=(r,)) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES, reason="needs PostgreSQL row locks and real concurrency")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(5))
def test_two_resting_buys_racing_for_the_same_cash_never_both_reserve_it(round_):
    set_quote("crypto", "BTC/USD", "100")
    conn = make_connection()
    build_adapter(conn).account()
    outcomes = _race(conn, [limit("95", qty="60", broker_client_id=uuid.uuid4().hex) for _ in range(2)])
    assert sorted(outcomes) == ["accepted", "insufficient_funds"]
    account = SimAccount.objects.get()
    assert account.reserved_cash == 95 * 60 and account.cash == 10000
    assert SimOrder.objects.get().reserved_cash == 95 * 60


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES, reason="needs PostgreSQL row locks and real concurrency")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(3))
def test_resting_and_filling_buys_racing_reserve_and_spend_no_more_than_the_cash(round_):
    set_quote("crypto", "BTC/USD", "100")
    conn = make_connection()
    build_adapter(conn).account()
    # Each wants 3000 of the 10000: three of the six can have it, whichever path they take.
    requests = [limit("100", qty="30", broker_client_id=uuid.uuid4().hex) if i % 2 else
                limit("95", qty=str(D(3000) / 95)[:12], broker_client_id=uuid.uuid4().hex) for i in range(6)]
    outcomes = _race(conn, requests)
    assert len(outcomes) == 6 and outcomes.count("insufficient_funds") == 3
    account = SimAccount.objects.get()
    orders = list(SimOrder.objects.all())
    assert account.reserved_cash == sum(o.reserved_cash for o in orders if o.status == OrderStatus.ACCEPTED)
    spent = sum(o.qty * o.avg_fill_price for o in orders if o.status == OrderStatus.FILLED)
    assert account.cash == 10000 - spent and account.cash - account.reserved_cash >= 0
    assert len(orders) == 6 - outcomes.count("insufficient_funds")


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES, reason="needs PostgreSQL row locks and real concurrency")
@pytest.mark.django_db(transaction=True)
def test_a_resting_buy_and_a_new_quote_of_its_symbol_are_serialized():
    """Whichever comes first, the order ends as if placed and quoted one after the other: never
    resting below a quote that crossed it (the placement saw the old quote, set_quote missed it)."""
    for _ in range(5):
        set_quote("crypto", "BTC/USD", "100")
        conn = make_connection()
        adapter = build_adapter(conn)
        adapter.account()
        start = threading.Barrier(2)
        placed: list = []

        def place():
            try:
                mine = build_adapter(BrokerAccount.objects.get(pk=conn.pk))
                mine.account()
                start.wait()
                placed.append(mine.place_order(limit("95")))
            finally:
                connections.close_all()

        def quote():
            try:
                start.wait()
                set_quote("crypto", "BTC/USD", "90")
            finally:
                connections.close_all()

        threads = [threading.Thread(target=place), threading.Thread(target=quote)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert adapter.get_order(placed[0].broker_order_id).status == OrderStatus.FILLED
