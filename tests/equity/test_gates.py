"""Gates 1 and 2 (feature flags, rate limits) and the order of the gates (SPEC.md "Edge cases, decided")."""

from __future__ import annotations

import pytest
from django.core.cache import caches
from waffle.models import Flag

from audit.models import BrokerOrderEvent
from tests.equity.helpers import assert_error, crypto_limit, place
from tests.factories import TraderProfileFactory

pytestmark = pytest.mark.django_db


def set_flag(name: str, everyone: bool | None) -> None:
    flag = Flag.objects.get(name=name)
    flag.everyone = everyone
    flag.save()  # waffle's save flushes its cache entry, as admin and `waffle_flag` do
    caches["waffle"].clear()


def test_flags_are_created_paper_on_live_off(db):
    assert Flag.objects.get(name="FEATURE_EQUITY_PAPER").everyone is True
    assert Flag.objects.get(name="FEATURE_EQUITY_LIVE").everyone is False


def test_paper_flag_off_is_503_feature_disabled(api_client, sim_crypto):
    set_flag("FEATURE_EQUITY_PAPER", False)
    assert_error(place(api_client, crypto_limit()), 503, "FEATURE_DISABLED")


def test_paper_flag_rolled_out_to_one_user_only_lets_that_user_trade(api_client, sim_crypto, make_client,
                                                                      other_user):
    from tests.factories import BrokerAccountFactory

    BrokerAccountFactory(user=other_user)
    flag = Flag.objects.get(name="FEATURE_EQUITY_PAPER")
    flag.everyone = None
    flag.save()
    flag.users.add(api_client.user)
    caches["waffle"].clear()
    assert place(api_client, crypto_limit()).status_code == 201
    assert_error(place(make_client(other_user), crypto_limit()), 503, "FEATURE_DISABLED")


def test_live_flag_off_is_503_feature_disabled(api_client, sim_crypto):
    assert_error(place(api_client, crypto_limit(live_mode=True)), 503, "FEATURE_DISABLED")


def test_live_flag_on_but_user_not_enabled_is_403_live_not_enabled(api_client, sim_crypto):
    set_flag("FEATURE_EQUITY_LIVE", True)
    assert_error(place(api_client, crypto_limit(live_mode=True)), 403, "LIVE_NOT_ENABLED")


def test_live_enabled_user_passes_gate_1_and_meets_gate_3(api_client, sim_crypto):
    set_flag("FEATURE_EQUITY_LIVE", True)
    TraderProfileFactory(user=api_client.user, live_enabled=True)
    assert_error(place(api_client, crypto_limit(live_mode=True)), 403, "BROKER_NOT_CONFIGURED")


def test_reads_and_cancels_stay_allowed_when_the_flags_are_off(api_client, sim_crypto):
    placed = place(api_client, crypto_limit()).json()
    set_flag("FEATURE_EQUITY_PAPER", False)
    q = {"asset_class": "crypto"}
    assert api_client.get("/api/equity/orders", q).status_code == 200
    assert api_client.get("/api/equity/positions", q).status_code == 200
    assert api_client.get("/api/equity/account", q).status_code == 200
    assert api_client.delete(f"/api/equity/orders/{placed['broker_order_id']}?asset_class=crypto").status_code == 204


def test_a_gate_refusal_is_audited_as_rejected_with_its_code(api_client, sim_crypto):
    set_flag("FEATURE_EQUITY_PAPER", False)
    place(api_client, crypto_limit(client_order_id="gated"))
    event = BrokerOrderEvent.objects.get()
    assert (event.event_type, event.error_code, event.client_order_id) == ("rejected", "FEATURE_DISABLED", "gated")


def test_the_31st_post_in_a_minute_is_429_with_retry_after(api_client, sim_crypto, settings, equity_orders):
    equity_orders.RATE_LIMIT_ORDERS = "3/m"
    for _ in range(3):
        assert place(api_client, crypto_limit()).status_code == 201
    resp = place(api_client, crypto_limit())
    assert_error(resp, 429, "RATE_LIMIT_EXCEEDED")
    assert 1 <= int(resp.headers["Retry-After"]) <= 60


def test_the_rate_limit_is_per_user(api_client, sim_crypto, settings, make_client, other_user, equity_orders):
    from tests.factories import BrokerAccountFactory

    equity_orders.RATE_LIMIT_ORDERS = "1/m"
    BrokerAccountFactory(user=other_user)
    place(api_client, crypto_limit())
    assert place(make_client(other_user), crypto_limit()).status_code == 201


def test_malformed_requests_and_replays_are_not_counted(api_client, sim_crypto, settings, equity_orders):
    equity_orders.RATE_LIMIT_ORDERS = "2/m"
    assert place(api_client, crypto_limit(client_order_id="r")).status_code == 201
    for _ in range(5):
        assert place(api_client, crypto_limit(qty=0)).status_code == 400
        assert place(api_client, crypto_limit(client_order_id="r")).status_code == 200
    assert place(api_client, crypto_limit()).status_code == 201


def test_requests_refused_after_gate_2_still_count(api_client, sim_crypto, settings, equity_orders):
    equity_orders.RATE_LIMIT_ORDERS = "2/m"
    assert place(api_client, crypto_limit(asset_class="kr_equity", symbol="005930")).status_code == 403
    assert place(api_client, crypto_limit()).status_code == 201
    assert_error(place(api_client, crypto_limit()), 429, "RATE_LIMIT_EXCEEDED")


def test_the_live_daily_cap_is_429_rate_limit_live_daily(api_client, sim_crypto, settings, equity_orders):
    equity_orders.RATE_LIMIT_LIVE_DAILY = 2
    set_flag("FEATURE_EQUITY_LIVE", True)
    TraderProfileFactory(user=api_client.user, live_enabled=True)
    for _ in range(2):  # no live connection: refused at gate 3, but counted at gate 2
        assert place(api_client, crypto_limit(live_mode=True)).status_code == 403
    resp = place(api_client, crypto_limit(live_mode=True))
    assert_error(resp, 429, "RATE_LIMIT_LIVE_DAILY")
    assert int(resp.headers["Retry-After"]) >= 1
    assert place(api_client, crypto_limit()).status_code == 201  # paper is not capped


def test_flag_gate_comes_before_rate_limit_and_registration(api_client, db, settings, equity_orders):
    equity_orders.RATE_LIMIT_ORDERS = "1/m"
    set_flag("FEATURE_EQUITY_PAPER", False)
    for _ in range(3):
        assert_error(place(api_client, crypto_limit()), 503, "FEATURE_DISABLED")


def test_rate_limit_comes_before_registration(api_client, db, settings, equity_orders):
    equity_orders.RATE_LIMIT_ORDERS = "1/m"
    assert_error(place(api_client, crypto_limit()), 403, "BROKER_NOT_CONFIGURED")
    assert_error(place(api_client, crypto_limit()), 429, "RATE_LIMIT_EXCEEDED")


def test_registration_comes_before_the_risk_rules(api_client, db):
    assert_error(place(api_client, crypto_limit(qty=1000)), 403, "BROKER_NOT_CONFIGURED")


def test_an_unreachable_rate_limit_cache_refuses_placements_with_503(api_client, sim_crypto, settings):
    settings.CACHES = {**settings.CACHES, "ratelimit": {
        "BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2}}}
    settings.RATELIMIT_USE_CACHE = "ratelimit"
    body = assert_error(place(api_client, crypto_limit()), 503, "SERVICE_UNAVAILABLE")
    assert "no order was sent" in body["detail"]
    from brokers.models import SimOrder

    assert not SimOrder.objects.exists()
    assert api_client.get("/api/equity/orders", {"asset_class": "crypto"}).status_code == 200
