"""UpbitAdapter: its wire mapping and its error taxonomy (beyond the shared contract suite).

Replies are Upbit's recorded shapes under tests/wire/upbit/ (see ../shared/brokers/upbit.md),
served by `responses`; the network stays closed (tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError
from urllib3.exceptions import ProxyError as Urllib3ProxyError

from brokers.adapters import upbit
from brokers.adapters.upbit import UpbitAdapter
from brokers.types import (
    AssetClass,
    Bracket,
    ListScope,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from brokers.errors import (
    BrokerNotConfigured,
    BrokerOutcomeUnknown,
    BrokerRejected,
    BrokerUnavailable,
    CredentialsRefused,
    DuplicateClientId,
    InsufficientFunds,
    OrderNotFound,
)
from tests.brokers.venues.upbit import Venue

WIRE = Path(__file__).resolve().parents[1] / "wire" / "upbit"
BASE = "https://upbit.fake.test"
ACCESS_KEY = "ak-7Hq2NcVb9xLmP4rT0sWe1yU3iO5pA6dF8gJ0kZ"
SECRET_KEY = "sk-Zx8Cv7Bn6Mm5Ll4Kk3Jj2Hh1Gg0Ff9Dd8Ss7Aa6Qq"
ORDER_UUID = "0f6b1c2e-4d7a-4b8e-9c3d-5a1e2f3b4c5d"
CLIENT_ID = "5b0e6c1d9f2a4e7b8c3d1a0f9e8d7c6b"
TIMEOUT = 7.5

ORDERS, ORDER = BASE + "/v1/orders", BASE + "/v1/order"
OPEN, CLOSED = BASE + "/v1/orders/open", BASE + "/v1/orders/closed"
ACCOUNTS, TICKER = BASE + "/v1/accounts", BASE + "/v1/ticker"


@pytest.fixture(autouse=True)
def _upbit_settings(settings, equity_orders):
    equity_orders.UPBIT_URL = BASE
    equity_orders.BROKER_TIMEOUT_SECONDS = TIMEOUT


@pytest.fixture(autouse=True)
def _no_retry_pause(monkeypatch):
    monkeypatch.setattr(upbit, "READ_RETRY_DELAYS", (0, 0))


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def adapter(_upbit_settings):
    return UpbitAdapter(credentials={"access_key": ACCESS_KEY, "secret_key": SECRET_KEY},
                        asset_class=AssetClass.CRYPTO, live=True, connection_id=7)


def wire(name: str):
    return json.loads((WIRE / name).read_text(encoding="utf-8"))


def refusal(name: str) -> dict:
    """responses.add kwargs for one recorded Upbit error reply."""
    entry = wire("errors.json")[name]
    return {"status": entry["status"], "json": entry["body"]}


def text(name: str) -> str:
    return (WIRE / name).read_text(encoding="utf-8")


def order(**overrides) -> OrderRequest:
    fields = dict(asset_class=AssetClass.CRYPTO, symbol="KRW-BTC", side=Side.BUY, qty=Decimal("0.001"),
                  order_type=OrderType.LIMIT, time_in_force=TimeInForce.GTC, broker_client_id=CLIENT_ID,
                  limit_price=Decimal("90000000"))
    fields.update(overrides)
    return OrderRequest(**fields)


def market_buy(**overrides) -> OrderRequest:
    return order(order_type=OrderType.MARKET, limit_price=None, **overrides)


def claims(call) -> dict:
    token = call.request.headers["Authorization"].removeprefix("Bearer ")
    return jwt.decode(token, SECRET_KEY, algorithms=["HS256"])  # only: HS256 is what we sign with


def sent_body(call) -> dict:
    return json.loads(call.request.body)


def query(call) -> dict:
    return dict(parse_qsl(urlsplit(call.request.url).query))


def calls_to(rsps, method: str, url: str) -> list:
    return [c for c in rsps.calls if c.request.method == method and c.request.url.split("?")[0] == url]


def sha512(value: str) -> str:
    return hashlib.sha512(value.encode("utf-8")).hexdigest()


def connection_refused() -> requests.ConnectionError:
    # What requests raises when nothing listens (checked against a closed local port).
    return requests.ConnectionError(MaxRetryError(None, ORDERS, NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused")))


def connection_reset() -> requests.ConnectionError:
    # What requests raises when the peer resets after reading the request (checked locally).
    return requests.ConnectionError(ProtocolError("Connection aborted.",
                                                  ConnectionResetError(104, "Connection reset by peer")))


# --- the adapter itself ---------------------------------------------------------------------

def test_upbit_has_no_paper_environment():
    with pytest.raises(BrokerNotConfigured, match="no paper"):
        UpbitAdapter(credentials={"access_key": ACCESS_KEY, "secret_key": SECRET_KEY},
                     asset_class=AssetClass.CRYPTO, live=False, connection_id=7)


def test_repr_shows_no_key(adapter):
    assert ACCESS_KEY not in repr(adapter) and SECRET_KEY not in repr(adapter)


# --- authentication ---------------------------------------------------------------------------

def test_private_call_carries_an_hs256_jwt_with_access_key_and_nonce_and_no_hash_without_params(rsps, adapter):
    rsps.add(responses.GET, ACCOUNTS, json=wire("accounts.json"))
    rsps.add(responses.GET, TICKER, json=wire("ticker.json"))
    adapter.positions()
    call = calls_to(rsps, "GET", ACCOUNTS)[0]
    token = call.request.headers["Authorization"].removeprefix("Bearer ")
    assert jwt.get_unverified_header(token)["alg"] == "HS256"  # upbit.md: Upbit's own samples
    payload = claims(call)
    assert payload["access_key"] == ACCESS_KEY and payload["nonce"]
    assert "query_hash" not in payload


def test_every_request_gets_a_fresh_nonce(rsps, adapter):
    rsps.add(responses.GET, ACCOUNTS, json=[])
    adapter.account()
    adapter.account()
    nonces = [claims(c)["nonce"] for c in calls_to(rsps, "GET", ACCOUNTS)]
    assert len(nonces) == 2 and nonces[0] != nonces[1]


def test_get_query_hash_is_sha512_of_the_query_string_as_sent(rsps, adapter):
    rsps.add(responses.GET, ORDER, json=wire("order_limit_wait.json"))
    adapter.get_order(ORDER_UUID)
    call = rsps.calls[0]
    assert urlsplit(call.request.url).query == f"uuid={ORDER_UUID}"
    assert claims(call)["query_hash"] == sha512(f"uuid={ORDER_UUID}")
    assert claims(call)["query_hash_alg"] == "SHA512"


def test_post_query_hash_is_sha512_of_the_body_fields_in_the_order_sent(rsps, adapter):
    rsps.add(responses.POST, ORDERS, status=201, json=wire("order_limit_wait.json"))
    adapter.place_order(order())
    call = rsps.calls[0]
    expected = f"market=KRW-BTC&side=bid&volume=0.001&price=90000000&ord_type=limit&identifier={CLIENT_ID}"
    assert "&".join(f"{k}={v}" for k, v in sent_body(call).items()) == expected
    assert claims(call)["query_hash"] == sha512(expected)
    assert claims(call)["query_hash_alg"] == "SHA512"


def test_open_orders_are_asked_for_by_state_wait_and_the_hash_matches_what_was_sent(rsps, adapter):
    rsps.add(responses.GET, OPEN, json=wire("orders_open.json"))
    adapter.list_orders(scope=ListScope.OPEN, symbol="KRW-BTC")
    call = rsps.calls[0]
    sent = urlsplit(call.request.url).query
    assert sent == "market=KRW-BTC&state=wait&page=1&limit=100&order_by=desc"
    assert claims(call)["query_hash"] == sha512(sent)


def test_ticker_for_several_markets_sends_a_plain_comma_list(rsps, adapter):
    rsps.add(responses.GET, ACCOUNTS, json=wire("accounts.json") + [
        {"currency": "BTC", "balance": "0.01", "locked": "0", "avg_buy_price": "140000000",
         "avg_buy_price_modified": False, "unit_currency": "KRW"}])
    rsps.add(responses.GET, TICKER, json=wire("ticker.json") + wire("ticker_btc.json"))
    adapter.positions()
    assert urlsplit(calls_to(rsps, "GET", TICKER)[0].request.url).query == "markets=KRW-ETH,KRW-BTC"


def test_public_ticker_is_called_without_authorization(rsps, adapter):
    rsps.add(responses.GET, TICKER, json=wire("ticker_btc.json"))
    adapter.latest_price("KRW-BTC")
    assert "Authorization" not in rsps.calls[0].request.headers


def test_a_wrong_secret_is_refused_by_upbit_as_credentials_refused():
    with Venue(secret_key="not-the-secret-upbit-knows-0123456789abcd") as venue:
        with pytest.raises(CredentialsRefused, match="jwt_verification"):
            venue.adapter.account()


def test_upbit_accepts_every_signature_of_a_full_order_cycle():
    with Venue() as venue:
        placed = venue.adapter.place_order(order(broker_client_id="cycle-1", limit_price=venue.price_below_market))
        venue.adapter.get_order(placed.broker_order_id)
        venue.adapter.list_orders(scope=ListScope.ALL, symbol="KRW-BTC")
        venue.adapter.cancel_order(placed.broker_order_id)
        venue.adapter.place_order(market_buy(broker_client_id="cycle-2"))
        venue.adapter.account()
        assert venue.fake.auth_failures == []
        assert len(venue.fake.tokens) >= 7


def test_every_request_carries_the_settings_timeout(rsps, adapter):
    rsps.add(responses.GET, TICKER, json=wire("ticker_btc.json"))
    rsps.add(responses.POST, ORDERS, status=201, json=wire("order_market_buy_created.json"))
    adapter.place_order(market_buy())
    assert [c.request.req_kwargs["timeout"] for c in rsps.calls] == [TIMEOUT, TIMEOUT]


# --- what an order becomes on the wire ---------------------------------------------------------

def test_limit_buy_is_sent_as_ord_type_limit_with_our_identifier(rsps, adapter):
    rsps.add(responses.POST, ORDERS, status=201, json=wire("order_limit_wait.json"))
    adapter.place_order(order())
    assert sent_body(rsps.calls[0]) == {"market": "KRW-BTC", "side": "bid", "volume": "0.001",
                                        "price": "90000000", "ord_type": "limit", "identifier": CLIENT_ID}


def test_market_buy_is_sent_as_ord_type_price_for_qty_times_last_price_rounded_down_to_whole_won(rsps, adapter):
    rsps.add(responses.GET, TICKER, json=wire("ticker_btc.json"))  # trade_price 143250123.0
    rsps.add(responses.POST, ORDERS, status=201, json=wire("order_market_buy_created.json"))
    adapter.place_order(market_buy(qty=Decimal("0.00123")))  # 176197.65129 KRW
    assert sent_body(calls_to(rsps, "POST", ORDERS)[0]) == {
        "market": "KRW-BTC", "side": "bid", "price": "176197", "ord_type": "price", "identifier": CLIENT_ID}


def test_open_market_buy_reports_the_quantity_it_was_placed_for(rsps, adapter):
    rsps.add(responses.GET, TICKER, json=wire("ticker_btc.json"))
    rsps.add(responses.POST, ORDERS, status=201, json=wire("order_market_buy_created.json"))
    placed = adapter.place_order(market_buy(qty=Decimal("0.00123")))
    assert placed.order_type == OrderType.MARKET and placed.limit_price is None
    assert placed.qty == Decimal("0.00123") and placed.status == OrderStatus.ACCEPTED


def test_market_sell_is_sent_as_ord_type_market_with_volume_and_no_price(rsps, adapter):
    rsps.add(responses.POST, ORDERS, status=201, json=wire("order_limit_wait.json"))
    adapter.place_order(market_buy(side=Side.SELL, qty=Decimal("0.0025")))
    assert sent_body(rsps.calls[0]) == {"market": "KRW-BTC", "side": "ask", "volume": "0.0025",
                                        "ord_type": "market", "identifier": CLIENT_ID}


@pytest.mark.parametrize(("tif", "wire_tif"), [(TimeInForce.IOC, "ioc"), (TimeInForce.FOK, "fok")])
def test_limit_ioc_and_fok_are_sent_as_upbit_time_in_force(rsps, adapter, tif, wire_tif):
    rsps.add(responses.POST, ORDERS, status=201, json=wire("order_limit_wait.json"))
    adapter.place_order(order(time_in_force=tif))
    assert sent_body(rsps.calls[0])["time_in_force"] == wire_tif


def test_gtc_limit_is_a_resting_limit_sent_without_time_in_force(rsps, adapter):
    rsps.add(responses.POST, ORDERS, status=201, json=wire("order_limit_wait.json"))
    adapter.place_order(order(time_in_force=TimeInForce.GTC))
    assert "time_in_force" not in sent_body(rsps.calls[0])


@pytest.mark.parametrize("stop", [
    order(order_type=OrderType.STOP, limit_price=None, stop_price=Decimal("110000000")),
    order(order_type=OrderType.STOP, limit_price=None, stop_price=Decimal("110000000"),
          stop_limit_price=Decimal("111000000")),
], ids=["stop", "stop_limit"])
def test_stop_orders_are_refused_naming_stop_without_any_http_call(rsps, adapter, stop):
    with pytest.raises(BrokerRejected, match="stop"):
        adapter.place_order(stop)
    assert len(rsps.calls) == 0


def test_day_time_in_force_is_refused_naming_the_accepted_values_without_any_http_call(rsps, adapter):
    with pytest.raises(BrokerRejected) as refused:
        adapter.place_order(order(time_in_force=TimeInForce.DAY))
    assert all(word in refused.value.detail for word in ("day", "gtc", "ioc", "fok"))
    assert len(rsps.calls) == 0


def test_fill_or_kill_market_order_is_refused_without_any_http_call(rsps, adapter):
    with pytest.raises(BrokerRejected, match="fill-or-kill"):
        adapter.place_order(market_buy(time_in_force=TimeInForce.FOK))
    assert len(rsps.calls) == 0


def test_bracket_order_is_refused_without_any_http_call(rsps, adapter):
    with pytest.raises(BrokerRejected, match="bracket"):
        adapter.place_order(order(bracket=Bracket(take_profit=Decimal("99000000"), stop_loss=Decimal("85000000"))))
    assert len(rsps.calls) == 0


def test_non_krw_market_is_refused_without_any_http_call(rsps, adapter):
    with pytest.raises(BrokerRejected, match="KRW market"):
        adapter.place_order(order(symbol="BTC-ETH", limit_price=Decimal("0.03")))
    assert len(rsps.calls) == 0


def test_price_off_the_tick_grid_comes_back_as_broker_rejected_with_upbits_message():
    with Venue() as venue:  # KRW-BTC at 100,000,000: the tick is 1,000 KRW
        with pytest.raises(BrokerRejected, match="invalid_price_bid"):
            venue.adapter.place_order(order(limit_price=Decimal("90000500")))


# --- placement: refusals ---------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("insufficient_funds_bid", InsufficientFunds),
    ("insufficient_funds_ask", InsufficientFunds),
    ("under_min_total_bid", BrokerRejected),
    ("under_min_total_ask", BrokerRejected),
    ("over_krw_funds_bid", BrokerRejected),
    ("invalid_price_bid", BrokerRejected),
    ("invalid_volume_ask", BrokerRejected),
    ("invalid_time_in_force", BrokerRejected),
    ("create_bid_error", BrokerRejected),
    ("create_ask_error", BrokerRejected),
    ("notfoundmarket", BrokerRejected),
    ("invalid_parameter", BrokerRejected),
    ("jwt_verification", CredentialsRefused),
    ("expired_access_key", CredentialsRefused),
    ("invalid_access_key", CredentialsRefused),
    ("no_authorization_ip", CredentialsRefused),
    ("out_of_scope", CredentialsRefused),
    ("market_offline", BrokerUnavailable),
    ("invalid_query_payload", BrokerUnavailable),
])
def test_order_refusal_maps_by_error_name(rsps, adapter, name, expected):
    rsps.add(responses.POST, ORDERS, **refusal(name))
    with pytest.raises(expected) as raised:
        adapter.place_order(order())
    assert type(raised.value) is expected  # a definite refusal is never an unknown outcome
    assert name in raised.value.detail


@pytest.mark.parametrize("name", ["insufficient_funds_bid", "under_min_total_bid", "notfoundmarket"])
def test_refusal_detail_carries_upbits_own_message(rsps, adapter, name):
    rsps.add(responses.POST, ORDERS, **refusal(name))
    with pytest.raises((BrokerRejected, InsufficientFunds)) as raised:
        adapter.place_order(order())
    assert wire("errors.json")[name]["body"]["error"]["message"] in raised.value.detail


def test_duplicated_identifier_returns_the_order_already_placed_under_it(rsps, adapter):
    rsps.add(responses.POST, ORDERS, **refusal("duplicated_identifier"))
    rsps.add(responses.GET, ORDER, json=wire("order_limit_wait.json"))
    placed = adapter.place_order(order())
    assert placed.broker_order_id == ORDER_UUID and placed.broker_client_id == CLIENT_ID
    assert query(calls_to(rsps, "GET", ORDER)[0]) == {"identifier": CLIENT_ID}
    assert len(calls_to(rsps, "POST", ORDERS)) == 1


# --- placement: lost and failed answers --------------------------------------------------------

def test_read_timeout_on_an_order_is_outcome_unknown_and_the_post_is_sent_once(rsps, adapter):
    rsps.add(responses.POST, ORDERS, body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(BrokerOutcomeUnknown):
        adapter.place_order(order())
    assert len(rsps.calls) == 1


def test_connection_reset_after_sending_an_order_is_outcome_unknown(rsps, adapter):
    rsps.add(responses.POST, ORDERS, body=connection_reset())
    with pytest.raises(BrokerOutcomeUnknown):
        adapter.place_order(order())
    assert len(rsps.calls) == 1


def test_connection_refused_on_an_order_is_unavailable_with_nothing_sent(rsps, adapter):
    rsps.add(responses.POST, ORDERS, body=connection_refused())
    with pytest.raises(BrokerUnavailable) as raised:
        adapter.place_order(order())
    assert type(raised.value) is BrokerUnavailable
    assert len(rsps.calls) == 1


def test_refused_proxy_on_an_order_is_unavailable_with_nothing_sent(rsps, adapter):
    rsps.add(responses.POST, ORDERS, body=requests.exceptions.ProxyError(MaxRetryError(None, ORDERS, Urllib3ProxyError(
        "Unable to connect to proxy", NewConnectionError(
            None, "Failed to establish a new connection: [Errno 111] Connection refused")))))
    with pytest.raises(BrokerUnavailable) as raised:
        adapter.place_order(order())
    assert type(raised.value) is BrokerUnavailable


def test_proxy_dropping_the_connection_after_an_order_is_outcome_unknown(rsps, adapter):
    # requests says "Unable to connect to proxy" also when the connection drops after the order went
    # through the proxy (brokers.http.never_sent); Upbit used to count every ProxyError as unreached.
    rsps.add(responses.POST, ORDERS, body=requests.exceptions.ProxyError(MaxRetryError(None, ORDERS, Urllib3ProxyError(
        "Unable to connect to proxy", ConnectionResetError(104, "Connection reset by peer")))))
    with pytest.raises(BrokerOutcomeUnknown):
        adapter.place_order(order())
    assert len(rsps.calls) == 1


def test_order_answered_with_a_redirect_is_outcome_unknown_and_the_redirect_is_not_followed(rsps, adapter):
    rsps.add(responses.POST, ORDERS, status=307, headers={"Location": BASE + "/elsewhere"})
    rsps.add(responses.POST, BASE + "/elsewhere", body=connection_refused())
    with pytest.raises(BrokerOutcomeUnknown):
        adapter.place_order(order())
    assert [c.request.url for c in rsps.calls] == [ORDERS]


def test_connect_timeout_on_an_order_is_unavailable_with_nothing_sent(rsps, adapter):
    rsps.add(responses.POST, ORDERS, body=requests.exceptions.ConnectTimeout("connect timed out"))
    with pytest.raises(BrokerUnavailable) as raised:
        adapter.place_order(order())
    assert type(raised.value) is BrokerUnavailable


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_error_on_an_order_is_outcome_unknown_and_not_resent(rsps, adapter, status):
    rsps.add(responses.POST, ORDERS, status=status, body=text("bad_gateway.html"), content_type="text/html")
    with pytest.raises(BrokerOutcomeUnknown):
        adapter.place_order(order())
    assert len(rsps.calls) == 1


def test_truncated_json_answer_to_an_order_is_outcome_unknown(rsps, adapter):
    rsps.add(responses.POST, ORDERS, status=201, body=json.dumps(wire("order_limit_wait.json"))[:120],
             content_type="application/json")
    with pytest.raises(BrokerOutcomeUnknown):
        adapter.place_order(order())


def test_html_answer_to_an_order_is_outcome_unknown(rsps, adapter):
    rsps.add(responses.POST, ORDERS, status=200, body=text("bad_gateway.html"), content_type="text/html")
    with pytest.raises(BrokerOutcomeUnknown):
        adapter.place_order(order())


def test_plain_text_429_on_an_order_is_unavailable_and_not_resent(rsps, adapter):
    rsps.add(responses.POST, ORDERS, status=429, body=text("too_many_requests.txt"), content_type="text/plain")
    with pytest.raises(BrokerUnavailable) as raised:
        adapter.place_order(order())
    assert type(raised.value) is BrokerUnavailable
    assert len(rsps.calls) == 1


def test_market_buy_whose_price_lookup_fails_sends_no_order(rsps, adapter):
    rsps.add(responses.GET, TICKER, status=503, body=text("bad_gateway.html"), content_type="text/html")
    with pytest.raises(BrokerUnavailable) as raised:
        adapter.place_order(market_buy())
    assert type(raised.value) is BrokerUnavailable
    assert calls_to(rsps, "POST", ORDERS) == []


def test_lost_order_answer_is_resolved_by_looking_up_our_identifier(rsps, adapter):
    request = order()
    before = datetime.now(UTC)
    rsps.add(responses.POST, ORDERS, body=requests.exceptions.ReadTimeout("read timed out"))
    rsps.add(responses.GET, ORDER, json=wire("order_limit_wait.json"))
    with pytest.raises(BrokerOutcomeUnknown):
        adapter.place_order(request)
    found = adapter.find_order(request, submitted_at=before)
    assert found is not None and found.broker_order_id == ORDER_UUID
    assert query(calls_to(rsps, "GET", ORDER)[0]) == {"identifier": CLIENT_ID}
    assert len(calls_to(rsps, "POST", ORDERS)) == 1


# --- find_order --------------------------------------------------------------------------------

def test_find_order_returns_none_when_upbit_knows_no_order_under_our_identifier(rsps, adapter):
    rsps.add(responses.GET, ORDER, **refusal("order_not_found"))
    assert adapter.find_order(order(), submitted_at=datetime.now(UTC)) is None


def test_find_order_cannot_decide_while_upbit_keeps_failing(rsps, adapter):
    rsps.add(responses.GET, ORDER, status=503, body=text("bad_gateway.html"), content_type="text/html")
    with pytest.raises(BrokerUnavailable):
        adapter.find_order(order(), submitted_at=datetime.now(UTC))
    assert len(rsps.calls) == 3


def test_find_order_cannot_decide_when_the_lookup_itself_is_refused(rsps, adapter):
    rsps.add(responses.GET, ORDER, **refusal("out_of_scope"))
    with pytest.raises(BrokerUnavailable) as raised:
        adapter.find_order(order(), submitted_at=datetime.now(UTC))
    assert type(raised.value) is BrokerUnavailable


# --- reads: retries and broken answers -----------------------------------------------------------

def test_a_read_retries_a_transient_server_error_and_then_answers(rsps, adapter):
    rsps.add(responses.GET, ORDER, status=502, body=text("bad_gateway.html"), content_type="text/html")
    rsps.add(responses.GET, ORDER, json=wire("order_limit_wait.json"))
    assert adapter.get_order(ORDER_UUID).broker_order_id == ORDER_UUID
    assert len(rsps.calls) == 2


def test_a_read_gives_up_after_three_attempts(rsps, adapter):
    rsps.add(responses.GET, ACCOUNTS, body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(BrokerUnavailable):
        adapter.account()
    assert len(rsps.calls) == 3


def test_html_body_on_a_read_is_unavailable(rsps, adapter):
    rsps.add(responses.GET, ACCOUNTS, status=200, body=text("bad_gateway.html"), content_type="text/html")
    with pytest.raises(BrokerUnavailable):
        adapter.account()


def test_truncated_json_on_a_read_is_unavailable(rsps, adapter):
    rsps.add(responses.GET, ACCOUNTS, status=200, body=json.dumps(wire("accounts.json"))[:90],
             content_type="application/json")
    with pytest.raises(BrokerUnavailable):
        adapter.account()


def test_plain_text_429_on_a_read_is_retried_then_unavailable(rsps, adapter):
    rsps.add(responses.GET, ACCOUNTS, status=429, body=text("too_many_requests.txt"), content_type="text/plain")
    with pytest.raises(BrokerUnavailable):
        adapter.account()
    assert len(rsps.calls) == 3


def test_418_block_is_not_called_again(rsps, adapter):
    rsps.add(responses.GET, ACCOUNTS, status=418, body=text("blocked_418.txt"), content_type="text/plain")
    with pytest.raises(BrokerUnavailable):
        adapter.account()
    assert len(rsps.calls) == 1


def test_refused_keys_on_a_read_are_credentials_refused(rsps, adapter):
    rsps.add(responses.GET, ACCOUNTS, **refusal("no_authorization_ip"))
    with pytest.raises(CredentialsRefused):
        adapter.account()
    assert len(rsps.calls) == 1


def test_a_reused_nonce_is_retried_with_a_new_token(rsps, adapter):
    rsps.add(responses.GET, ACCOUNTS, **refusal("nonce_used"))
    rsps.add(responses.GET, ACCOUNTS, json=[])
    adapter.account()
    first, second = (claims(c)["nonce"] for c in rsps.calls)
    assert first != second


def test_unknown_order_is_order_not_found(rsps, adapter):
    rsps.add(responses.GET, ORDER, **refusal("order_not_found"))
    with pytest.raises(OrderNotFound):
        adapter.get_order(ORDER_UUID)


# --- order states ------------------------------------------------------------------------------

def get(rsps, adapter, fixture: str):
    rsps.add(responses.GET, ORDER, json=wire(fixture))
    return adapter.get_order(wire(fixture)["uuid"])


def test_waiting_order_is_accepted(rsps, adapter):
    got = get(rsps, adapter, "order_limit_wait.json")
    assert got.status == OrderStatus.ACCEPTED and got.filled_qty == 0 and got.avg_fill_price is None


def test_waiting_order_with_executed_volume_is_partially_filled(rsps, adapter):
    got = get(rsps, adapter, "order_limit_wait_partially_executed.json")
    assert got.status == OrderStatus.PARTIALLY_FILLED
    assert got.filled_qty == Decimal("0.0004") and got.qty == Decimal("0.001")


def test_done_order_is_filled_at_the_average_of_its_trades(rsps, adapter):
    got = get(rsps, adapter, "order_limit_done_with_trades.json")
    assert got.status == OrderStatus.FILLED and got.side == Side.SELL
    assert got.avg_fill_price == Decimal("2250900") / Decimal("0.5")  # 4,501,800


def test_order_times_are_aware_utc_converted_from_kst(rsps, adapter):
    got = get(rsps, adapter, "order_limit_done_with_trades.json")
    assert got.submitted_at == datetime(2026, 1, 5, 0, 30, tzinfo=UTC)
    assert got.updated_at == datetime(2026, 1, 5, 0, 44, 59, 999999, tzinfo=UTC)  # the last trade
    assert got.submitted_at.utcoffset() == timedelta(0)


def test_order_numbers_are_decimals_parsed_from_upbits_strings(rsps, adapter):
    got = get(rsps, adapter, "order_limit_wait_partially_executed.json")
    assert all(type(v) is Decimal for v in (got.qty, got.filled_qty, got.limit_price, got.avg_fill_price))


def test_canceled_order_with_nothing_executed_is_canceled(rsps, adapter):
    got = get(rsps, adapter, "order_limit_cancel_nothing_executed.json")
    assert got.status == OrderStatus.CANCELED and got.filled_qty == 0


def test_market_buy_ending_in_cancel_with_executed_volume_is_filled(rsps, adapter):
    got = get(rsps, adapter, "order_market_buy_cancel_executed.json")
    assert got.status == OrderStatus.FILLED
    assert got.qty == got.filled_qty == Decimal("0.001229")
    assert got.avg_fill_price == Decimal("176054.479") / Decimal("0.001229")


def test_ioc_limit_canceled_after_a_partial_fill_is_canceled_with_its_filled_quantity(rsps, adapter):
    got = get(rsps, adapter, "order_ioc_cancel_partially_executed.json")
    assert got.status == OrderStatus.CANCELED and got.time_in_force == TimeInForce.IOC
    assert got.filled_qty == Decimal("0.006") and got.qty == Decimal("0.01")


def test_an_order_state_upbit_never_documented_is_not_guessed(rsps, adapter):
    strange = dict(wire("order_limit_wait.json"), state="pending_review")
    rsps.add(responses.GET, ORDER, json=strange)
    with pytest.raises(BrokerUnavailable, match="pending_review"):
        adapter.get_order(ORDER_UUID)


# --- cancel ------------------------------------------------------------------------------------

def test_accepted_cancel_sends_the_uuid_as_query_only(rsps, adapter):
    rsps.add(responses.DELETE, ORDER, json=wire("order_cancel_accepted.json"))
    assert adapter.cancel_order(ORDER_UUID) is None
    call = rsps.calls[0]
    assert query(call) == {"uuid": ORDER_UUID} and not call.request.body


@pytest.mark.parametrize("answer", ["order_not_found", "bad_request"])
def test_cancelling_a_final_order_is_broker_rejected_whatever_4xx_upbit_answers(rsps, adapter, answer):
    rsps.add(responses.DELETE, ORDER, **refusal(answer))
    rsps.add(responses.GET, ORDER, json=wire("order_limit_done_with_trades.json"))
    with pytest.raises(BrokerRejected, match="already filled"):
        adapter.cancel_order(ORDER_UUID)


def test_cancelling_an_unknown_order_is_order_not_found(rsps, adapter):
    rsps.add(responses.DELETE, ORDER, **refusal("order_not_found"))
    rsps.add(responses.GET, ORDER, **refusal("order_not_found"))
    with pytest.raises(OrderNotFound):
        adapter.cancel_order(ORDER_UUID)


def test_cancel_refused_for_an_order_still_open_is_broker_rejected_with_upbits_reason(rsps, adapter):
    rsps.add(responses.DELETE, ORDER, **refusal("bad_request"))
    rsps.add(responses.GET, ORDER, json=wire("order_limit_wait.json"))
    with pytest.raises(BrokerRejected, match="bad_request"):
        adapter.cancel_order(ORDER_UUID)


def test_cancel_is_sent_once_even_when_its_answer_is_lost(rsps, adapter):
    rsps.add(responses.DELETE, ORDER, body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(BrokerUnavailable):
        adapter.cancel_order(ORDER_UUID)
    assert len(rsps.calls) == 1


def test_cancel_and_then_get_shows_canceled_against_the_fake():
    with Venue() as venue:
        placed = venue.adapter.place_order(order(limit_price=venue.price_below_market))
        venue.adapter.cancel_order(placed.broker_order_id)
        assert venue.adapter.get_order(placed.broker_order_id).status == OrderStatus.CANCELED


# --- listings ----------------------------------------------------------------------------------

def window(call) -> tuple[datetime, datetime]:
    params = query(call)
    return (datetime.fromtimestamp(int(params["start_time"]) / 1000, UTC),
            datetime.fromtimestamp(int(params["end_time"]) / 1000, UTC))


def test_closed_list_without_since_asks_for_the_last_seven_days_once(rsps, adapter):
    rsps.add(responses.GET, CLOSED, json=[])
    adapter.list_orders(scope=ListScope.CLOSED)
    assert len(rsps.calls) == 1
    start, end = window(rsps.calls[0])
    assert end - start == timedelta(days=7)
    assert abs(end - datetime.now(UTC)) < timedelta(seconds=10)


def test_closed_list_since_twenty_days_is_split_into_contiguous_windows_of_at_most_seven_days(rsps, adapter):
    rsps.add(responses.GET, CLOSED, json=[])
    since = datetime.now(UTC) - timedelta(days=20)
    adapter.list_orders(scope=ListScope.CLOSED, since=since)
    windows = sorted(window(c) for c in rsps.calls)
    assert len(windows) == 3
    assert all(end - start <= timedelta(days=7) for start, end in windows)
    assert abs(windows[0][0] - since) < timedelta(milliseconds=1)
    assert all(windows[i][1] == windows[i + 1][0] for i in range(len(windows) - 1))


def test_a_full_closed_page_is_followed_back_in_time(rsps, adapter):
    template = wire("orders_closed.json")[0]
    newest = datetime.now(UTC) - timedelta(hours=1)
    full_page = [dict(template, uuid=f"full-{i:04d}",
                      created_at=(newest - timedelta(seconds=i)).astimezone(upbit.KST).isoformat(timespec="seconds"))
                 for i in range(upbit.CLOSED_PAGE_SIZE)]
    rsps.add(responses.GET, CLOSED, json=full_page)
    rsps.add(responses.GET, CLOSED, json=wire("orders_closed.json"))
    listed = adapter.list_orders(scope=ListScope.CLOSED, since=datetime.now(UTC) - timedelta(days=3))
    first_end, second_end = (window(c)[1] for c in rsps.calls)
    assert second_end < first_end
    assert len(rsps.calls) == 2 and len(listed) == upbit.CLOSED_PAGE_SIZE  # the two old fixtures fall before since


def test_open_list_pages_until_a_short_page(rsps, adapter):
    template = wire("orders_open.json")[0]
    rsps.add(responses.GET, OPEN, json=[dict(template, uuid=f"open-{i:03d}") for i in range(upbit.OPEN_PAGE_SIZE)])
    rsps.add(responses.GET, OPEN, json=[dict(template, uuid="open-last")])
    listed = adapter.list_orders(scope=ListScope.OPEN)
    assert [query(c)["page"] for c in rsps.calls] == ["1", "2"]
    assert len(listed) == upbit.OPEN_PAGE_SIZE + 1


def test_listing_everything_merges_open_and_closed_newest_first(rsps, adapter):
    rsps.add(responses.GET, OPEN, json=wire("orders_open.json"))
    rsps.add(responses.GET, CLOSED, json=wire("orders_closed.json"))
    listed = adapter.list_orders(scope=ListScope.ALL)
    assert [o.submitted_at for o in listed] == sorted((o.submitted_at for o in listed), reverse=True)
    assert {o.status for o in listed} == {OrderStatus.ACCEPTED, OrderStatus.FILLED}


def test_listed_orders_take_their_average_price_from_executed_funds(rsps, adapter):
    rsps.add(responses.GET, CLOSED, json=wire("orders_closed.json"))
    listed = adapter.list_orders(scope=ListScope.CLOSED)
    market_sell = next(o for o in listed if o.broker_order_id.startswith("3c4d"))
    assert market_sell.avg_fill_price == Decimal("141500000")


def test_listing_by_symbol_asks_upbit_for_that_market(rsps, adapter):
    rsps.add(responses.GET, OPEN, json=[])
    adapter.list_orders(scope=ListScope.OPEN, symbol="KRW-ETH")
    assert query(rsps.calls[0])["market"] == "KRW-ETH"


# --- positions and account ---------------------------------------------------------------------

def test_positions_are_coin_rows_as_krw_market_symbols_at_the_ticker_price(rsps, adapter):
    rsps.add(responses.GET, ACCOUNTS, json=wire("accounts.json"))
    rsps.add(responses.GET, TICKER, json=wire("ticker.json"))
    (eth,) = adapter.positions()
    assert eth.symbol == "KRW-ETH" and eth.side == "LONG" and eth.currency == "KRW"
    assert eth.current_price == Decimal("4520000") and eth.avg_entry_price == Decimal("4100000")


def test_zero_and_dust_rows_are_not_positions(rsps, adapter):
    rsps.add(responses.GET, ACCOUNTS, json=wire("accounts.json"))  # XRP "0"/"0", APENFT "0.00000000"/"0.0"
    rsps.add(responses.GET, TICKER, json=wire("ticker.json"))
    assert [p.symbol for p in adapter.positions()] == ["KRW-ETH"]
    assert query(calls_to(rsps, "GET", TICKER)[0]) == {"markets": "KRW-ETH"}


def test_position_quantity_counts_coins_locked_in_open_orders(rsps, adapter):
    rsps.add(responses.GET, ACCOUNTS, json=wire("accounts.json"))
    rsps.add(responses.GET, TICKER, json=wire("ticker.json"))
    (eth,) = adapter.positions()
    assert eth.qty == Decimal("0.15")
    assert eth.unrealized_pnl == Decimal("0.15") * (Decimal("4520000") - Decimal("4100000"))


def test_position_in_a_coin_without_a_krw_ticker_is_valued_at_cost(rsps, adapter):
    rows = wire("accounts.json") + [{"currency": "OLDCOIN", "balance": "12", "locked": "0", "avg_buy_price": "35",
                                     "avg_buy_price_modified": False, "unit_currency": "KRW"}]
    rsps.add(responses.GET, ACCOUNTS, json=rows)
    rsps.add(responses.GET, TICKER, match=[responses.matchers.query_param_matcher({"markets": "KRW-ETH"})],
             json=wire("ticker.json"))
    rsps.add(responses.GET, TICKER, **refusal("ticker_code_not_found"))
    held = {p.symbol: p for p in adapter.positions()}
    assert held["KRW-ETH"].current_price == Decimal("4520000")
    assert held["KRW-OLDCOIN"].current_price == Decimal("35") and held["KRW-OLDCOIN"].unrealized_pnl == 0


def test_account_cash_is_the_krw_row_and_buying_power_its_available_part(rsps, adapter):
    rsps.add(responses.GET, ACCOUNTS, json=wire("accounts.json"))
    rsps.add(responses.GET, TICKER, json=wire("ticker.json"))
    acct = adapter.account()
    assert acct.cash == Decimal("350050.5") and acct.buying_power == Decimal("250000.5")
    assert acct.currency == "KRW" and acct.as_of.utcoffset() == timedelta(0)


def test_account_equity_adds_the_coins_at_their_last_price(rsps, adapter):
    rsps.add(responses.GET, ACCOUNTS, json=wire("accounts.json"))
    rsps.add(responses.GET, TICKER, json=wire("ticker.json"))
    assert adapter.account().equity == Decimal("350050.5") + Decimal("0.15") * Decimal("4520000")


# --- latest price ------------------------------------------------------------------------------

def test_latest_price_is_the_exact_decimal_of_the_json_number(rsps, adapter):
    rsps.add(responses.GET, TICKER, body='[{"market": "KRW-XRP", "trade_price": 812.3456789012345}]',
             content_type="application/json")
    price = adapter.latest_price("KRW-XRP")
    assert type(price) is Decimal and price == Decimal("812.3456789012345")


def test_latest_price_of_an_unknown_market_is_broker_rejected(rsps, adapter):
    rsps.add(responses.GET, TICKER, **refusal("ticker_code_not_found"))
    with pytest.raises(BrokerRejected, match="KRW-NOPE"):
        adapter.latest_price("KRW-NOPE")


# --- logging -----------------------------------------------------------------------------------

def test_one_log_line_per_call_with_outcome_and_latency(rsps, adapter, caplog):
    rsps.add(responses.GET, ORDER, json=wire("order_limit_wait.json"))
    with caplog.at_level(logging.DEBUG, logger="brokers.adapters.upbit"):
        adapter.get_order(ORDER_UUID)
    (line,) = [r for r in caplog.records if r.name == "brokers.adapters.upbit"]
    assert line.outcome == "200 ok" and isinstance(line.latency_ms, int)
    assert line.http_path == "/v1/order" and line.connection_id == 7


def test_logs_never_carry_the_keys_or_the_jwt(rsps, adapter, caplog):
    rsps.add(responses.POST, ORDERS, **refusal("jwt_verification"))
    with caplog.at_level(logging.DEBUG), pytest.raises(CredentialsRefused):
        adapter.place_order(order())
    token = rsps.calls[0].request.headers["Authorization"].removeprefix("Bearer ")
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert caplog.records
    assert SECRET_KEY not in logged and ACCESS_KEY not in logged and token not in logged


# --- pacing (issue 11 item 3): per access key, by group, Remaining-Req honoured ---------------------------------

def test_remaining_req_sec_0_makes_the_groups_next_request_wait_a_second(rsps, adapter, pacing_clock):
    rsps.add(responses.GET, ACCOUNTS, json=[], headers={"Remaining-Req": "group=default; min=1800; sec=0"})
    rsps.add(responses.GET, ACCOUNTS, json=[], headers={"Remaining-Req": "group=default; min=1800; sec=29"})
    adapter.positions()
    pacing_clock.waits.clear()
    adapter.positions()
    assert sum(pacing_clock.waits) >= 1.0


def test_requests_left_in_the_second_let_the_next_request_go_at_the_groups_pace(rsps, adapter, pacing_clock):
    rsps.add(responses.GET, ACCOUNTS, json=[], headers={"Remaining-Req": "group=default; min=1800; sec=25"})
    adapter.positions()
    pacing_clock.waits.clear()
    adapter.positions()
    assert sum(pacing_clock.waits) < 1.0


def test_order_group_is_paced_at_twelve_a_second_and_other_private_calls_at_thirty(adapter, equity_orders):
    assert adapter._pacers["order"].rate == equity_orders.UPBIT_ORDER_REQUESTS_PER_SECOND == 12
    assert adapter._pacers["default"].rate == equity_orders.UPBIT_PRIVATE_REQUESTS_PER_SECOND == 30


def test_order_posts_of_one_access_key_never_exceed_twelve_in_a_second(rsps, adapter, pacing_clock):
    rsps.add(responses.POST, ORDERS, status=201, json=wire("order_limit_wait.json"))
    starts = []
    for _ in range(30):
        adapter.place_order(order(broker_client_id=uuid.uuid4().hex))
        starts.append(pacing_clock.now())
    assert max(sum(1 for t in starts if first <= t < first + 1.0) for first in starts) <= 12


def test_a_429_holds_the_group_for_a_second_before_the_retry(rsps, adapter, pacing_clock):
    rsps.add(responses.GET, ACCOUNTS, status=429, body=text("too_many_requests.txt"))
    rsps.add(responses.GET, ACCOUNTS, json=[])
    adapter.positions()
    assert sum(pacing_clock.waits) >= 1.0


# --- issue 11: partial market buys, foreign rows, the IP allow-list, duplicates ------------------

def test_market_buy_canceled_after_a_partial_fill_reports_what_it_executed_not_filled(rsps, adapter):
    # 286,500 of its 1,000,000 KRW spent, then `cancel`: not a rounding leftover (upbit.md §3).
    got = get(rsps, adapter, "order_market_buy_cancel_partially_executed.json")
    assert got.status == OrderStatus.CANCELED
    assert got.filled_qty == Decimal("0.002") and got.avg_fill_price == Decimal("143250000")


def test_listed_market_buy_canceled_after_a_partial_fill_is_canceled_by_its_executed_funds(rsps, adapter):
    row = {key: value for key, value in wire("order_market_buy_cancel_partially_executed.json").items()
           if key != "trades"}
    rsps.add(responses.GET, CLOSED, json=[dict(row, executed_funds="286500")])
    [listed] = adapter.list_orders(scope=ListScope.CLOSED)
    assert listed.status == OrderStatus.CANCELED and listed.filled_qty == Decimal("0.002")
    assert listed.avg_fill_price == Decimal("143250000")


def test_listed_market_buy_whose_amount_was_spent_but_for_rounding_is_filled(rsps, adapter):
    row = {key: value for key, value in wire("order_market_buy_cancel_executed.json").items() if key != "trades"}
    rsps.add(responses.GET, CLOSED, json=[dict(row, executed_funds="176054.479")])
    [listed] = adapter.list_orders(scope=ListScope.CLOSED)
    assert listed.status == OrderStatus.FILLED


@pytest.mark.parametrize(("field", "value"), [("ord_type", "twap"), ("state", "trigger"), ("side", "short"),
                                              ("time_in_force", "gtd")])
def test_a_foreign_order_in_a_list_is_left_out_and_logged_once_never_breaking_the_list(
        rsps, adapter, caplog, monkeypatch, field, value):
    monkeypatch.setattr(upbit, "_FOREIGN_LOGGED", set())
    foreign = dict(wire("order_limit_wait.json"), uuid="9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b", **{field: value})
    ours = wire("order_limit_wait.json")
    rsps.add(responses.GET, OPEN, json=[foreign, ours, dict(foreign, uuid="8e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b")])
    caplog.set_level(logging.WARNING, logger="brokers.adapters.upbit")
    listed = adapter.list_orders(scope=ListScope.OPEN)
    listed_again = adapter.list_orders(scope=ListScope.OPEN)
    assert [o.broker_order_id for o in listed] == [o.broker_order_id for o in listed_again] == [ours["uuid"]]
    notes = [r for r in caplog.records if "left out of the listing" in r.getMessage()]
    assert len(notes) == 1 and value in notes[0].getMessage()


def test_one_of_our_orders_read_by_id_with_a_foreign_value_is_still_an_error(rsps, adapter):
    rsps.add(responses.GET, ORDER, json=dict(wire("order_limit_wait.json"), ord_type="twap"))
    with pytest.raises(BrokerUnavailable, match="twap"):
        adapter.get_order(ORDER_UUID)


@pytest.mark.parametrize("name", ["no_authorization_ip", "no_authorization_i_p"])
def test_both_spellings_of_the_ip_allow_list_refusal_mean_the_keys_cannot_be_used_from_here(rsps, adapter, name):
    rsps.add(responses.GET, ACCOUNTS, status=401,
             json={"error": {"name": name, "message": "This is not a verified IP."}})
    with pytest.raises(CredentialsRefused, match="IP allow-list") as raised:
        adapter.account()
    assert name in raised.value.detail


def test_the_jwt_is_hs256_and_verifies_with_the_secret_as_raw_bytes(rsps, adapter):
    rsps.add(responses.GET, ACCOUNTS, json=wire("accounts.json"))
    rsps.add(responses.GET, TICKER, json=wire("ticker.json"))
    adapter.account()
    token = calls_to(rsps, "GET", ACCOUNTS)[0].request.headers["Authorization"].removeprefix("Bearer ")
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(token, SECRET_KEY, algorithms=["HS512"])
    assert jwt.decode(token, SECRET_KEY.encode("utf-8"), algorithms=["HS256"])["access_key"] == ACCESS_KEY


def test_duplicated_identifier_whose_order_is_not_shown_yet_is_an_unknown_outcome_never_a_rejection(rsps, adapter):
    rsps.add(responses.POST, ORDERS, **refusal("duplicated_identifier"))
    rsps.add(responses.GET, ORDER, **refusal("order_not_found"))
    with pytest.raises(DuplicateClientId) as raised:
        adapter.place_order(order())
    assert isinstance(raised.value, BrokerOutcomeUnknown) and not isinstance(raised.value, BrokerRejected)
    assert len(calls_to(rsps, "POST", ORDERS)) == 1


def test_find_order_not_shown_is_none_and_absence_settles_only_after_the_settling_time(rsps, adapter, equity_orders):
    equity_orders.BROKER_ABSENT_AFTER_SECONDS = 600
    rsps.add(responses.GET, ORDER, **refusal("order_not_found"))
    sent = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
    assert adapter.find_order(order(), submitted_at=sent) is None
    assert adapter.client_ids is True
    assert not adapter.absence_settled(submitted_at=sent, now=sent + timedelta(seconds=599))
    assert adapter.absence_settled(submitted_at=sent, now=sent + timedelta(seconds=600))
