"""Faults on every route: each real adapter x each route x each broker fault, through the HTTP API.

SPEC.md "Brokers" and "Edge cases, decided": a broker that fails on a read or a cancel is 502
BROKER_UNAVAILABLE with the envelope; a placement whose request never reached the broker is 502,
one whose outcome is unknown is looked up by our client id at once (found -> 201; not found ->
re-sent under the same client id, which the broker refuses if the first arrived -> 201; whatever
stays undecided, and KIS, which has no client id -> 202 pending). Never a 500, an audit row for
every placement and cancel attempt, never a second broker order.
"""

from __future__ import annotations

import pytest

from tests.equity.helpers import assert_error, place
from tests.faults.conftest import ADAPTERS, FAULTS, events_of

pytestmark = pytest.mark.django_db

# What a placement answers when its order POST meets the fault (the lookups work).
PLACEMENT = [
    # broker   fault                answer
    ("alpaca", "connect_refused", 502),  # nothing reached the broker
    ("alpaca", "read_timeout", 201),  # placed, answer lost: found by our client id
    ("alpaca", "connection_reset", 201),  # not placed, not found: re-sent under the same client id
    ("alpaca", "server_error", 201),
    ("alpaca", "html_body", 201),
    ("alpaca", "truncated_json", 201),
    ("kis", "connect_refused", 502),
    ("kis", "read_timeout", 202),  # KIS has no client id: pending until reconciled
    ("kis", "connection_reset", 202),
    ("kis", "server_error", 202),
    ("kis", "html_body", 202),
    ("kis", "truncated_json", 202),
    ("upbit", "connect_refused", 502),
    ("upbit", "read_timeout", 201),
    ("upbit", "connection_reset", 201),
    ("upbit", "server_error", 201),
    ("upbit", "html_body", 201),
    ("upbit", "truncated_json", 201),
]
OUTCOME_UNKNOWN = [name for name, fault in FAULTS.items() if name != "connect_refused"]
OUTCOME_EVENT = {201: "placed", 202: "pending", 502: "rejected"}


@pytest.mark.parametrize(("broker", "fault", "answer"), PLACEMENT, indirect=["broker"])
def test_a_placement_meeting_a_broker_fault_gets_the_specs_answer_and_never_a_second_order(
        broker, trader, fault, answer):
    fault = FAULTS[fault]
    broker.arm(fault, "place")
    resp = place(trader, broker.order(client_order_id="k-1"))

    assert resp.status_code == answer, resp.content[:500]
    if answer == 502:
        assert_error(resp, 502, "BROKER_UNAVAILABLE")
    else:
        assert resp.json()["order_id"] == "k-1"
        assert (resp.json()["status"] == "pending") == (answer == 202)
        assert (resp.json()["broker_order_id"] is None) == (answer == 202)
    assert events_of("k-1") == [("submitted", ""),
                                (OUTCOME_EVENT[answer], "BROKER_UNAVAILABLE" if answer == 502 else "")]

    retry = place(trader, broker.order(client_order_id="k-1"))
    assert retry.status_code == (201 if answer == 502 else 200), retry.content[:500]  # a new attempt, or a replay
    placed = 1 if (fault.reaches_broker or answer != 202) else 0  # 202: KIS, where nothing reached it
    assert broker.broker_orders() == placed
    # Every POST that reached the broker: one, since a re-send goes only where the first did not arrive.
    assert broker.order_posts_received() == placed


@pytest.mark.parametrize("fault", OUTCOME_UNKNOWN)
@pytest.mark.parametrize("broker", ADAPTERS, indirect=True)
def test_a_placement_whose_lookup_fails_too_is_202_pending_and_its_retry_replays_it(broker, trader, fault):
    fault = FAULTS[fault]
    broker.arm(fault, "place")
    broker.arm(fault, "lookup", times=None)
    resp = place(trader, broker.order(client_order_id="k-1"))

    assert resp.status_code == 202, resp.content[:500]
    assert resp.json()["status"] == "pending" and resp.json()["broker_order_id"] is None
    assert events_of("k-1") == [("submitted", ""), ("pending", "")]
    retry = place(trader, broker.order(client_order_id="k-1"))
    assert retry.status_code == 200 and retry.json()["status"] == "pending", retry.content[:500]
    assert broker.order_posts_received() == broker.broker_orders() == (1 if fault.reaches_broker else 0)

    got = trader.get("/api/equity/orders/k-1", broker.query())  # by order_id: it has no broker id yet
    assert got.status_code == 200 and got.json()["status"] == "pending", got.content[:500]
    assert_error(trader.delete(f"/api/equity/orders/k-1?{broker.query_string()}"), 502, "BROKER_UNAVAILABLE")
    assert events_of("k-1")[-1] == ("cancel_rejected", "BROKER_UNAVAILABLE")


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("broker", ADAPTERS, indirect=True)
def test_a_placement_whose_risk_snapshot_fails_is_502_and_sends_no_order(broker, trader, fault):
    broker.arm(FAULTS[fault], "account", times=None)  # the funds rule reads the account first
    resp = place(trader, broker.order(client_order_id="k-1"))
    assert_error(resp, 502, "BROKER_UNAVAILABLE")
    assert events_of("k-1") == [("rejected", "BROKER_UNAVAILABLE")]
    assert broker.order_posts_received() == 0


# --- reads and cancels: the broker down on the route's own call -> 502 -------------------------------

def resting_order(broker, trader) -> dict:
    placed = place(trader, broker.order(client_order_id="resting"))
    assert placed.status_code == 201 and placed.json()["status"] == "accepted", placed.content[:500]
    return placed.json()


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("broker", ADAPTERS, indirect=True)
def test_cancel_when_the_broker_fails_is_502_and_audited(broker, trader, fault):
    order = resting_order(broker, trader)
    broker.arm(FAULTS[fault], "cancel", times=None)
    resp = trader.delete(f"/api/equity/orders/{order['broker_order_id']}?{broker.query_string()}")
    assert_error(resp, 502, "BROKER_UNAVAILABLE")
    assert events_of("resting")[-1] == ("cancel_rejected", "BROKER_UNAVAILABLE")


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("broker", ADAPTERS, indirect=True)
def test_get_one_order_when_the_broker_fails_is_502(broker, trader, fault):
    order = resting_order(broker, trader)
    broker.arm(FAULTS[fault], "get", times=None)
    resp = trader.get(f"/api/equity/orders/{order['broker_order_id']}", broker.query())
    assert_error(resp, 502, "BROKER_UNAVAILABLE")


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("broker", ADAPTERS, indirect=True)
def test_list_orders_when_the_broker_fails_is_502(broker, trader, fault):
    resting_order(broker, trader)  # an open order: the list asks the broker for its fresh state
    broker.arm(FAULTS[fault], "list", times=None)
    resp = trader.get("/api/equity/orders", broker.query())
    assert_error(resp, 502, "BROKER_UNAVAILABLE")


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("broker", ADAPTERS, indirect=True)
def test_positions_when_the_broker_fails_is_502(broker, trader, fault):
    broker.arm(FAULTS[fault], "positions", times=None)
    resp = trader.get("/api/equity/positions", broker.query())
    assert_error(resp, 502, "BROKER_UNAVAILABLE")


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("broker", ADAPTERS, indirect=True)
def test_account_when_the_broker_fails_is_502(broker, trader, fault):
    broker.arm(FAULTS[fault], "account", times=None)
    resp = trader.get("/api/equity/account", broker.query())
    assert_error(resp, 502, "BROKER_UNAVAILABLE")

