"""The one emit point (SPEC.md "Order updates pushed"): every change of an order's status or
filled_qty, on every code path, is exactly one OrderEvent, however often it is observed; and the
feed GET /api/equity/events that serves them."""

from __future__ import annotations

import io
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from brokers.sim_exchange import set_quote
from equity import sync
from equity.events import save_order_state
from equity.models import Attempt, Order, OrderEvent
from tests.equity.helpers import ORDER_FIELDS, assert_error, crypto_limit, crypto_market, place
from tests.equity.test_lost_replies import BTC, broker, connect, fail_lookups, lose_the_reply_after_placing  # noqa: F401

pytestmark = pytest.mark.django_db
Q = {"asset_class": "crypto"}


def feed(order: Order | None = None) -> list[str]:
    rows = OrderEvent.objects.order_by("id")
    if order is not None:
        rows = rows.filter(order=order)
    return list(rows.values_list("type", flat=True))


def read_everything(client, broker_order_id: str) -> None:
    """Every way the service observes an order: one GET, the list, a sync pass, reconcile."""
    assert client.get(f"/api/equity/orders/{broker_order_id}", Q).status_code == 200
    assert client.get("/api/equity/orders", Q).status_code == 200
    sync.sync_open_orders()
    call_command("reconcile_orders", "--older-than", "0", stdout=io.StringIO())


# --- every code path ---------------------------------------------------------------------------

def test_a_market_order_filled_at_once_is_one_filled_event_however_often_it_is_read(api_client, sim_crypto):
    placed = place(api_client, crypto_market()).json()
    for _ in range(3):
        read_everything(api_client, placed["broker_order_id"])
    assert feed() == ["order.filled"]
    event = OrderEvent.objects.get()
    assert event.user == api_client.user and event.data["status"] == "filled"
    assert set(event.data) == ORDER_FIELDS and event.data["filled_qty"] == 0.01  # amounts as JSON numbers


def test_a_resting_order_filled_by_sim_quote_is_accepted_then_filled_once_whoever_sees_it(api_client, sim_crypto):
    placed = place(api_client, crypto_limit(limit_price=45000)).json()
    assert feed() == ["order.accepted"]
    read_everything(api_client, placed["broker_order_id"])
    assert feed() == ["order.accepted"]  # nothing changed: nothing emitted
    call_command("sim_quote", "crypto", "BTC/USD", "44000", stdout=io.StringIO())  # the market crosses it
    for _ in range(3):
        read_everything(api_client, placed["broker_order_id"])
    assert feed() == ["order.accepted", "order.filled"]
    assert OrderEvent.objects.last().data["avg_fill_price"] == 45000


@pytest.mark.parametrize("reader", ["get", "list", "sync"])
def test_the_fill_is_emitted_by_whichever_reader_sees_it_first(api_client, sim_crypto, reader):
    placed = place(api_client, crypto_limit(limit_price=45000)).json()
    set_quote("crypto", "BTC/USD", "44000")
    if reader == "get":
        api_client.get(f"/api/equity/orders/{placed['broker_order_id']}", Q)
    elif reader == "list":
        api_client.get("/api/equity/orders", Q)
    else:
        sync.sync_open_orders()
    assert feed() == ["order.accepted", "order.filled"]
    read_everything(api_client, placed["broker_order_id"])
    assert feed() == ["order.accepted", "order.filled"]


def test_a_cancel_is_one_canceled_event(api_client, sim_crypto):
    placed = place(api_client, crypto_limit()).json()
    assert api_client.delete(f"/api/equity/orders/{placed['broker_order_id']}?asset_class=crypto").status_code == 204
    read_everything(api_client, placed["broker_order_id"])
    assert feed() == ["order.accepted", "order.canceled"]


def test_a_refused_placement_is_one_rejected_event_and_its_new_attempt_starts_pending(api_client, sim_crypto):
    body = crypto_limit(client_order_id="k-1", qty=100)  # 100 BTC: beyond the simulator's cash
    assert place(api_client, body).status_code == 422
    assert feed() == ["order.rejected"]
    assert place(api_client, crypto_limit(client_order_id="k-1", qty=100)).status_code == 422
    # The same key again is a new attempt: pending (restarted), then refused again.
    assert feed() == ["order.rejected", "order.pending", "order.rejected"]


def test_a_placement_with_an_unknown_outcome_is_one_pending_event_and_its_resolution_one_more(api_client, broker):
    lose_the_reply_after_placing(broker)
    fail_lookups(broker, times=2)
    connect(api_client, broker)
    assert place(api_client, BTC).status_code == 202
    assert feed() == ["order.pending"]
    Order.objects.update(attempt_started_at=timezone.now() - timedelta(minutes=5))
    for _ in range(2):
        call_command("reconcile_orders", stdout=io.StringIO())
    assert feed() == ["order.pending", "order.accepted"]
    assert place(api_client, BTC).status_code == 200  # a replay observes it again
    assert feed() == ["order.pending", "order.accepted"]


def test_a_stale_in_flight_attempt_taken_over_by_reconcile_is_one_pending_event(api_client, sim_crypto):
    order = Order.objects.create(user=api_client.user, client_order_id="dead", request_fingerprint="x",
                                 attempt=Attempt.IN_FLIGHT, broker_client_id="never-sent",
                                 attempt_started_at=timezone.now() - timedelta(minutes=20), connection=sim_crypto,
                                 exchange="sim", asset_class="crypto", environment="paper", symbol="BTC/USD",
                                 side="buy", order_type="limit", time_in_force="gtc", qty="0.01", limit_price=30000)
    call_command("reconcile_orders", stdout=io.StringIO())
    call_command("reconcile_orders", stdout=io.StringIO())
    order.refresh_from_db()
    assert order.attempt == Attempt.DONE
    assert feed(order) == ["order.pending", "order.rejected"]  # placed (outcome unknown), then settled absent


def test_a_partial_fill_then_the_rest_are_two_events(api_client, sim_crypto):
    place(api_client, crypto_limit())
    order = Order.objects.get()
    order.status, order.filled_qty = "partially_filled", Decimal("0.004")
    save_order_state(order, fields=["status", "filled_qty"])
    save_order_state(order, fields=["status", "filled_qty"])  # observed again
    order.status, order.filled_qty = "filled", Decimal("0.01")
    save_order_state(order, fields=["status", "filled_qty"])
    assert feed() == ["order.accepted", "order.partially_filled", "order.filled"]


def test_an_older_observation_arriving_late_is_not_written_and_not_emitted(api_client, sim_crypto):
    place(api_client, crypto_limit())
    late = Order.objects.get()  # read before the cancel...
    canceled = Order.objects.get()
    canceled.status = "canceled"
    save_order_state(canceled, fields=["status"])
    late.status, late.filled_qty = "partially_filled", Decimal("0.001")  # ...written after it
    assert save_order_state(late, fields=["status", "filled_qty"]) is None
    assert late.status == "canceled"  # the caller goes on with what is stored
    assert Order.objects.get().status == "canceled"
    assert feed() == ["order.accepted", "order.canceled"]


def test_the_simulators_day_order_expiry_is_one_expired_event(make_client, user, quotes):
    from tests.factories import BrokerAccountFactory

    BrokerAccountFactory(user=user, asset_class="us_equity")
    import time_machine

    with time_machine.travel("2026-11-24 15:00:00+00:00", tick=False):  # a Tuesday, NYSE open
        placed = place(make_client(user), {"asset_class": "us_equity", "symbol": "AAPL", "side": "buy", "qty": 1,
                                    "order_type": "limit", "limit_price": 150, "time_in_force": "day"})
        assert placed.status_code == 201, placed.content
    with time_machine.travel("2026-11-25 02:00:00+00:00", tick=False):  # after the close
        assert sync.expire_sim_orders() == 1
        sync.sync_open_orders()
        sync.sync_open_orders()
    assert feed() == ["order.accepted", "order.expired"]


# --- the feed ----------------------------------------------------------------------------------

def test_the_feed_pages_the_callers_own_events_oldest_first(api_client, sim_crypto, make_client, other_user, quotes):
    from tests.factories import BrokerAccountFactory

    BrokerAccountFactory(user=other_user, asset_class="crypto")
    other = make_client(other_user)
    for i in range(5):
        place(api_client, crypto_market(client_order_id=f"mine-{i}"))
        place(other, crypto_market(client_order_id=f"theirs-{i}"))
    first = api_client.get("/api/equity/events", {"limit": 2}).json()
    assert [e["data"]["client_order_id"] for e in first["items"]] == ["mine-0", "mine-1"]
    assert first["next_after"] == first["items"][-1]["id"]
    rest = api_client.get("/api/equity/events", {"after": first["next_after"], "limit": 500}).json()
    assert [e["data"]["client_order_id"] for e in rest["items"]] == ["mine-2", "mine-3", "mine-4"]
    event = rest["items"][0]
    assert set(event) == {"id", "type", "created_at", "data"} and event["type"] == "order.filled"
    assert event["created_at"].endswith("Z")
    done = api_client.get("/api/equity/events", {"after": rest["next_after"]}).json()
    assert done == {"items": [], "next_after": None}


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 501}, {"after": -1}, {"after": "x"}, {"limit": "1.5"}])
def test_the_feed_refuses_bad_paging(api_client, query):
    assert_error(api_client.get("/api/equity/events", query), 400, "VALIDATION_ERROR")


def test_the_feed_needs_a_login(client):
    assert_error(client.get("/api/equity/events"), 401, "NOT_AUTHENTICATED")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_feed_pages_without_gaps_or_repeats_while_events_are_being_written(api_client, sim_crypto):
    """Writers commit events in parallel; a reader paging by next_after the whole time sees each
    of the user's events exactly once, in id order (equity.models.EventStream)."""
    from django.db import connection as db

    if db.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's concurrent writers")
    place(api_client, crypto_limit(client_order_id="seed"))
    for i in range(4):
        place(api_client, crypto_limit(client_order_id=f"w-{i}"))
    order_ids = list(Order.objects.filter(client_order_id__startswith="w-").values_list("pk", flat=True))
    writes_per_writer = 25
    stop = threading.Event()

    def writer(order_pk):
        from django.db import connections

        try:
            order = Order.objects.get(pk=order_pk)
            for n in range(1, writes_per_writer + 1):
                order.status, order.filled_qty = "partially_filled", Decimal("0.0001") * n
                save_order_state(order, fields=["status", "filled_qty"])
        finally:
            connections.close_all()

    seen: list[int] = []

    def reader():
        from django.db import connections

        after = None
        try:
            while True:
                writers_done = stop.is_set()  # before the read: an empty page after it means all was seen
                params = {"limit": 7} if after is None else {"after": after, "limit": 7}
                page = api_client.get("/api/equity/events", params).json()
                seen.extend(e["id"] for e in page["items"])
                after = page["next_after"] or after
                if writers_done and not page["items"]:
                    return
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(pk,)) for pk in order_ids]
    read = threading.Thread(target=reader)
    read.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    read.join(timeout=60)
    expected = list(OrderEvent.objects.filter(user=api_client.user).order_by("id").values_list("id", flat=True))
    assert len(expected) == 5 + 4 * writes_per_writer
    assert seen == expected  # no gap, no repeat, in order


def test_a_brackets_legs_each_open_and_end_as_one_event_however_often_they_are_read(api_client, sim_crypto):
    from equity.models import Order as Row

    body = crypto_limit(limit_price=45000, bracket={"take_profit": 52000, "stop_loss": 44000},
                        client_order_id="b-1")
    placed = place(api_client, body).json()
    set_quote("crypto", "BTC/USD", "44900")  # the entry fills; both legs open
    for _ in range(2):
        read_everything(api_client, placed["broker_order_id"])
    set_quote("crypto", "BTC/USD", "52500")  # the take-profit fills; the simulator cancels the stop (OCO)
    for _ in range(2):
        read_everything(api_client, placed["broker_order_id"])
        api_client.get("/api/equity/orders/b-1:tp", Q)
    by_order = {key: feed(Row.objects.get(client_order_id=key)) for key in ("b-1", "b-1:tp", "b-1:sl")}
    assert by_order == {"b-1": ["order.accepted", "order.filled"], "b-1:tp": ["order.accepted", "order.filled"],
                        "b-1:sl": ["order.accepted", "order.canceled"]}
    leg = OrderEvent.objects.filter(order__client_order_id="b-1:sl").last()
    assert leg.data["metadata"]["parent_order_id"] == "b-1"


def test_canceling_a_bracket_emits_each_legs_cancel_once(api_client, sim_crypto):
    body = crypto_limit(limit_price=45000, bracket={"take_profit": 52000, "stop_loss": 44000},
                        client_order_id="b-2")
    place(api_client, body)
    set_quote("crypto", "BTC/USD", "44900")
    api_client.get("/api/equity/orders", Q)  # the legs open
    assert api_client.delete("/api/equity/orders/b-2?asset_class=crypto").status_code == 204
    read_everything(api_client, "b-2")
    types = sorted(OrderEvent.objects.filter(order__client_order_id__startswith="b-2:")
                   .values_list("order__client_order_id", "type"))
    assert types == [("b-2:sl", "order.accepted"), ("b-2:sl", "order.canceled"),
                     ("b-2:tp", "order.accepted"), ("b-2:tp", "order.canceled")]


def test_a_final_state_the_service_assumed_is_corrected_by_the_brokers_and_emitted(api_client, sim_crypto):
    """A cancel whose read-back failed is taken as canceled; the broker had filled it: the next read
    corrects it (one final state to another), as one more event."""
    place(api_client, crypto_limit())
    assumed = Order.objects.get()
    assumed.status = "canceled"
    save_order_state(assumed, fields=["status"])
    truth = Order.objects.get()
    truth.status, truth.filled_qty = "filled", Decimal("0.01")
    assert save_order_state(truth, fields=["status", "filled_qty"]) is not None
    assert feed() == ["order.accepted", "order.canceled", "order.filled"]
    truth.status, truth.filled_qty = "partially_filled", Decimal("0.005")  # never back to an open state
    assert save_order_state(truth, fields=["status", "filled_qty"]) is None and truth.status == "filled"


def test_cancel_all_is_one_canceled_event_per_open_order(api_client, sim_crypto):
    place(api_client, crypto_limit(client_order_id="c-1"))
    place(api_client, crypto_limit(client_order_id="c-2"))
    place(api_client, crypto_market(client_order_id="c-3"))  # filled: nothing to cancel
    assert api_client.delete("/api/equity/orders?asset_class=crypto").status_code == 200
    api_client.get("/api/equity/orders", Q)
    canceled = sorted(OrderEvent.objects.filter(type="order.canceled").values_list("order__client_order_id", flat=True))
    assert canceled == ["c-1", "c-2"]
