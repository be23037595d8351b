"""client_order_id: a repeat never reaches the broker twice (SPEC.md "Idempotency", "Edge cases, decided")."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from audit.models import BrokerOrderEvent
from brokers.models import SimOrder
from equity.models import Attempt, Order
from tests.equity.helpers import assert_error, crypto_limit, crypto_market, place

pytestmark = pytest.mark.django_db


def test_same_key_and_same_body_replays_the_stored_order_with_200(api_client, sim_crypto):
    first = place(api_client, crypto_limit(client_order_id="k-1"))
    again = place(api_client, crypto_limit(client_order_id="k-1"))
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json() | {"updated_at": again.json()["updated_at"]}
    assert SimOrder.objects.count() == 1


def test_a_replay_with_the_default_time_in_force_spelled_out_is_the_same_body(api_client, sim_crypto):
    body = crypto_limit(client_order_id="k-tif")
    body.pop("time_in_force")
    assert place(api_client, body).status_code == 201
    assert place(api_client, crypto_limit(client_order_id="k-tif", time_in_force="gtc")).status_code == 200


def test_same_key_with_a_different_body_is_422_naming_the_key(api_client, sim_crypto):
    place(api_client, crypto_limit(client_order_id="k-2"))
    resp = place(api_client, crypto_limit(client_order_id="k-2", limit_price=31000))
    body = assert_error(resp, 422, "VALIDATION_ERROR")
    assert body["errors"]["client_order_id"] and SimOrder.objects.count() == 1


def test_a_replay_runs_no_gate_even_when_the_flag_is_now_off(api_client, sim_crypto):
    from waffle.models import Flag

    place(api_client, crypto_limit(client_order_id="k-3"))
    Flag.objects.filter(name="FEATURE_EQUITY_PAPER").update(everyone=False)
    from django.core.cache import caches

    caches["waffle"].clear()
    assert place(api_client, crypto_limit(client_order_id="k-3")).status_code == 200


def test_a_retry_after_a_refusal_is_a_new_attempt_not_a_replay(api_client, sim_crypto):
    refused = place(api_client, crypto_market(side="sell", qty=0.1, client_order_id="k-4"))
    assert refused.status_code == 422
    from brokers.sim_exchange import set_quote

    place(api_client, crypto_market(qty=0.1))  # now holds 0.1 BTC
    set_quote("crypto", "BTC/USD", "50000")
    retried = place(api_client, crypto_market(side="sell", qty=0.1, client_order_id="k-4"))
    assert retried.status_code == 201 and retried.json()["status"] == "filled"


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_repeated_key_still_replays_the_stored_order(api_client, sim_crypto):
    first = place(api_client, crypto_limit(client_order_id="k-autocommit"))
    again = place(api_client, crypto_limit(client_order_id="k-autocommit"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["broker_order_id"] == first.json()["broker_order_id"] and SimOrder.objects.count() == 1


def test_keys_of_different_users_never_collide(make_client, user, other_user, quotes):
    from tests.factories import BrokerAccountFactory

    for u in (user, other_user):
        BrokerAccountFactory(user=u)
    a = place(make_client(user), crypto_limit(client_order_id="shared"))
    b = place(make_client(other_user), crypto_limit(client_order_id="shared"))
    assert a.status_code == b.status_code == 201
    assert a.json()["broker_order_id"] != b.json()["broker_order_id"]


def test_a_repeat_while_the_first_is_in_flight_is_409_with_retry_after_1(api_client, sim_crypto):
    Order.objects.create(user=api_client.user, client_order_id="k-5", request_fingerprint="x",
                         attempt=Attempt.IN_FLIGHT, attempt_started_at=timezone.now(), asset_class="crypto",
                         environment="paper", symbol="BTC/USD", side="buy", order_type="limit", time_in_force="gtc",
                         qty=1)
    from equity.services import _fingerprint

    body = crypto_limit(client_order_id="k-5")
    Order.objects.filter(client_order_id="k-5").update(request_fingerprint=_fingerprint(
        {k: v for k, v in _parsed(body).items() if k != "live_mode"}))
    resp = place(api_client, body)
    assert_error(resp, 409, "IDEMPOTENCY_IN_PROGRESS")
    assert resp.headers["Retry-After"] == "1"


def _parsed(body):
    from equity.serializers import PlaceOrderRequest

    s = PlaceOrderRequest(data=body)
    s.is_valid(raise_exception=True)
    return dict(s.validated_data)


def test_an_attempt_abandoned_before_sending_is_taken_over_by_a_repeat(api_client, sim_crypto):
    from equity.services import _fingerprint

    body = crypto_limit(client_order_id="k-6")
    Order.objects.create(user=api_client.user, client_order_id="k-6",
                         request_fingerprint=_fingerprint({k: v for k, v in _parsed(body).items() if k != "live_mode"}),
                         attempt=Attempt.IN_FLIGHT, attempt_started_at=timezone.now() - timedelta(minutes=5),
                         asset_class="crypto", environment="paper", symbol="BTC/USD", side="buy",
                         order_type="limit", time_in_force="gtc", qty="0.01", limit_price=30000)
    assert place(api_client, body).status_code == 201


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_place_exactly_one_broker_order(make_client, user, quotes):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: real concurrent transactions")
    from tests.factories import BrokerAccountFactory

    BrokerAccountFactory(user=user)
    results = []

    def send():
        try:
            results.append(place(make_client(user), crypto_limit(client_order_id="race")))
        finally:
            from django.db import connections

            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    codes = sorted(r.status_code for r in results)
    assert codes.count(201) == 1 and set(codes) <= {200, 201, 409}, codes
    assert SimOrder.objects.count() == 1
    assert BrokerOrderEvent.objects.filter(event_type="placed").count() == 1
