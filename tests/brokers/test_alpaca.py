"""The Alpaca adapter's own suite: the error table of shared/brokers/alpaca.md, the transport
(timeouts, no blind retry, URLs, auth), the order bodies sent, and the wire -> our types mapping.

Happy paths run against the stateful fake of tests/brokers/venues/alpaca.py; error rows register
one `responses` reply each, from the recorded shapes in tests/wire/alpaca/.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests
import responses
from alpaca.trading import enums as alpaca_enums
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import ProxyError as Urllib3ProxyError

from brokers.adapters.alpaca import STATUS_FROM_WIRE, AlpacaAdapter
from brokers.types import AssetClass, Bracket, ListScope, OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from brokers.errors import (
    BrokerOutcomeUnknown,
    BrokerRejected,
    BrokerUnavailable,
    CredentialsRefused,
    InsufficientFunds,
    OrderNotFound,
)
from tests.brokers import test_contract as contract
from tests.brokers.venues.alpaca import API_KEY, DATA_URL, LIVE_URL, PAPER_URL, SECRET_KEY, WIRE, Venue, wire

ORDERS = f"{PAPER_URL}/v2/orders"
BY_CLIENT_ID = f"{PAPER_URL}/v2/orders:by_client_order_id"
ACCOUNT = f"{PAPER_URL}/v2/account"
POSITIONS = f"{PAPER_URL}/v2/positions"
ORDER_ID = "61e69015-8549-4bfd-b9c3-01e75843f47d"
HTML_504 = (WIRE / "gateway_504.html").read_text()


@pytest.fixture
def broker(settings, equity_orders):
    """Alpaca's REST wire, mocked; the adapter's URLs and timeout come from these settings."""
    equity_orders.ALPACA_PAPER_URL = PAPER_URL
    equity_orders.ALPACA_LIVE_URL = LIVE_URL
    equity_orders.ALPACA_DATA_URL = DATA_URL
    equity_orders.BROKER_TIMEOUT_SECONDS = 7.5
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def crypto_venue():
    with Venue(asset_class=AssetClass.CRYPTO) as venue:
        yield venue


@pytest.fixture
def equity_venue():
    with Venue() as venue:
        yield venue


def make_adapter(*, asset_class=AssetClass.US_EQUITY, live=False) -> AlpacaAdapter:
    return AlpacaAdapter(credentials={"api_key": API_KEY, "secret_key": SECRET_KEY}, asset_class=asset_class,
                         live=live, connection_id=7)


def order_request(**overrides) -> OrderRequest:
    fields = dict(asset_class=AssetClass.US_EQUITY, symbol="AAPL", side=Side.BUY, qty=Decimal("2"),
                  order_type=OrderType.LIMIT, time_in_force=TimeInForce.DAY, broker_client_id=uuid.uuid4().hex,
                  limit_price=Decimal("150"))
    fields.update(overrides)
    return OrderRequest(**fields)


def wire_order(**overrides) -> dict:
    order = wire("order.json")
    order.update(overrides)
    return order


def posts(mock) -> list:
    return [c for c in mock.calls if c.request.method == "POST"]


def sent_json(call) -> dict:
    return json.loads(call.request.body)


def refused() -> requests.ConnectionError:
    """What requests raises when the TCP connection is refused (nothing was sent)."""
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    return requests.exceptions.ConnectionError(MaxRetryError(None, "/v2/orders", reason))


def connect_timeout() -> requests.ConnectTimeout:
    return requests.exceptions.ConnectTimeout(MaxRetryError(None, "/v2/orders", ConnectTimeoutError("timed out")))


def read_timeout() -> requests.ReadTimeout:
    return requests.exceptions.ReadTimeout(ReadTimeoutError(None, "/v2/orders", "Read timed out. (read timeout=7.5)"))


def reset() -> requests.ConnectionError:
    """What requests raises when the peer resets the connection after the request went out."""
    return requests.exceptions.ConnectionError(
        ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer")))


# --- transport: URLs, auth, timeout, retries -------------------------------------------------------


def test_paper_connection_calls_the_paper_url(broker):
    broker.get(ACCOUNT, json=wire("account.json"))
    make_adapter(live=False).account()
    assert broker.calls[0].request.url == f"{PAPER_URL}/v2/account"


def test_live_connection_calls_the_live_url(broker):
    broker.get(f"{LIVE_URL}/v2/account", json=wire("account.json"))
    make_adapter(live=True).account()
    assert broker.calls[0].request.url == f"{LIVE_URL}/v2/account"


def test_requests_carry_the_key_id_and_secret_headers(broker):
    broker.get(ACCOUNT, json=wire("account.json"))
    make_adapter().account()
    headers = broker.calls[0].request.headers
    assert headers["APCA-API-KEY-ID"] == API_KEY and headers["APCA-API-SECRET-KEY"] == SECRET_KEY


def test_order_post_gets_the_settings_timeout(broker):
    broker.post(ORDERS, json=wire_order())
    make_adapter().place_order(order_request())
    assert broker.calls[0].request.req_kwargs["timeout"] == 7.5


def test_market_data_request_gets_the_settings_timeout(broker):
    broker.get(f"{DATA_URL}/v2/stocks/trades/latest", json=wire("latest_trade_stock.json"))
    make_adapter().latest_price("AAPL")
    assert broker.calls[0].request.req_kwargs["timeout"] == 7.5


def test_504_on_submit_sends_exactly_one_post(broker):
    broker.post(ORDERS, body=HTML_504, status=504, content_type="text/html")
    with pytest.raises(BrokerUnavailable):
        make_adapter().place_order(order_request())
    assert len(posts(broker)) == 1


def test_429_on_submit_sends_exactly_one_post(broker):
    broker.post(ORDERS, json=wire("error_429.json"), status=429)
    with pytest.raises(BrokerUnavailable):
        make_adapter().place_order(order_request())
    assert len(posts(broker)) == 1


def test_429_on_read_is_retried_once_then_broker_unavailable(broker):
    broker.get(ACCOUNT, json=wire("error_429.json"), status=429)
    with pytest.raises(BrokerUnavailable):
        make_adapter().account()
    assert len(broker.calls) == 2


def test_retried_read_never_sleeps(broker, monkeypatch):
    def no_sleep(seconds):
        raise AssertionError(f"slept {seconds} s inside a request")

    monkeypatch.setattr("time.sleep", no_sleep)
    broker.get(ACCOUNT, json=wire("error_429.json"), status=429)
    with pytest.raises(BrokerUnavailable):
        make_adapter().account()


def test_read_succeeds_when_its_one_retry_succeeds(broker):
    broker.get(ACCOUNT, body=HTML_504, status=503, content_type="text/html")
    broker.get(ACCOUNT, json=wire("account.json"))
    assert make_adapter().account().equity == Decimal("10342.1")


def test_read_timeout_on_read_is_broker_unavailable_without_retry(broker):
    broker.get(ACCOUNT, body=read_timeout())
    with pytest.raises(BrokerUnavailable):
        make_adapter().account()
    assert len(broker.calls) == 1


def test_cancel_is_sent_once_on_5xx(broker):
    broker.delete(f"{ORDERS}/{ORDER_ID}", status=500, json={"code": 50010000, "message": "internal server error"})
    with pytest.raises(BrokerUnavailable):
        make_adapter().cancel_order(ORDER_ID)
    assert len(broker.calls) == 1


# --- error table: placement -----------------------------------------------------------------------


def test_401_on_submit_is_credentials_refused(broker):
    broker.post(ORDERS, json=wire("error_401.json"), status=401)
    with pytest.raises(CredentialsRefused):
        make_adapter().place_order(order_request())


def test_403_insufficient_buying_power_is_insufficient_funds(broker):
    broker.post(ORDERS, json=wire("error_403_insufficient_buying_power.json"), status=403)
    with pytest.raises(InsufficientFunds, match="insufficient buying power"):
        make_adapter().place_order(order_request())


def test_403_insufficient_qty_on_a_sell_is_insufficient_funds(broker):
    broker.post(ORDERS, json=wire("error_403_insufficient_qty.json"), status=403)
    with pytest.raises(InsufficientFunds, match="insufficient qty"):
        make_adapter().place_order(order_request(side=Side.SELL))


def test_403_with_another_code_is_broker_rejected(broker):
    broker.post(ORDERS, json={"code": 40310100, "message": "trade denied due to pattern day trading protection"},
                status=403)
    with pytest.raises(BrokerRejected, match="pattern day trading"):
        make_adapter().place_order(order_request())


def test_422_on_submit_is_broker_rejected_with_the_brokers_message(broker):
    broker.post(ORDERS, json={"code": 40010001, "message": "qty must be > 0"}, status=422)
    with pytest.raises(BrokerRejected, match="qty must be > 0"):
        make_adapter().place_order(order_request())


def test_422_duplicate_client_id_returns_the_existing_order(broker):
    request = order_request()
    broker.post(ORDERS, json=wire("error_422_duplicate_client_id.json"), status=422)
    broker.get(BY_CLIENT_ID, json=wire_order(client_order_id=request.broker_client_id))
    placed = make_adapter().place_order(request)
    assert placed.broker_order_id == ORDER_ID and placed.broker_client_id == request.broker_client_id
    assert len(posts(broker)) == 1


def test_422_duplicate_client_id_that_cannot_be_read_back_is_outcome_unknown(broker):
    broker.post(ORDERS, json=wire("error_422_duplicate_client_id.json"), status=422)
    broker.get(BY_CLIENT_ID, json=wire("error_404_order.json"), status=404)
    with pytest.raises(BrokerOutcomeUnknown):
        make_adapter().place_order(order_request())


def test_504_on_submit_is_outcome_unknown(broker):
    broker.post(ORDERS, body=HTML_504, status=504, content_type="text/html")
    with pytest.raises(BrokerOutcomeUnknown):
        make_adapter().place_order(order_request())


def test_500_on_submit_is_outcome_unknown(broker):
    broker.post(ORDERS, json={"code": 50010000, "message": "internal server error"}, status=500)
    with pytest.raises(BrokerOutcomeUnknown):
        make_adapter().place_order(order_request())


def test_read_timeout_on_submit_is_outcome_unknown(broker):
    broker.post(ORDERS, body=read_timeout())
    with pytest.raises(BrokerOutcomeUnknown):
        make_adapter().place_order(order_request())


def test_connection_reset_after_submit_is_outcome_unknown(broker):
    broker.post(ORDERS, body=reset())
    with pytest.raises(BrokerOutcomeUnknown):
        make_adapter().place_order(order_request())


def test_connection_refused_on_submit_is_unavailable_with_nothing_sent(broker):
    broker.post(ORDERS, body=refused())
    with pytest.raises(BrokerUnavailable) as caught:
        make_adapter().place_order(order_request())
    assert not isinstance(caught.value, BrokerOutcomeUnknown)


def test_refused_proxy_on_submit_is_unavailable_with_nothing_sent(broker):
    broker.post(ORDERS, body=requests.exceptions.ProxyError(MaxRetryError(None, "/v2/orders", Urllib3ProxyError(
        "Unable to connect to proxy", NewConnectionError(
            None, "Failed to establish a new connection: [Errno 111] Connection refused")))))
    with pytest.raises(BrokerUnavailable) as caught:
        make_adapter().place_order(order_request())
    assert not isinstance(caught.value, BrokerOutcomeUnknown)


def test_proxy_dropping_the_connection_after_submit_is_outcome_unknown(broker):
    # requests says "Unable to connect to proxy" also when the connection drops after the order went
    # through the proxy (brokers.http.never_sent); Alpaca used to count every ProxyError as nothing sent.
    broker.post(ORDERS, body=requests.exceptions.ProxyError(MaxRetryError(None, "/v2/orders", Urllib3ProxyError(
        "Unable to connect to proxy", ConnectionResetError(104, "Connection reset by peer")))))
    with pytest.raises(BrokerOutcomeUnknown):
        make_adapter().place_order(order_request())
    assert len(posts(broker)) == 1


def test_connect_timeout_on_submit_is_unavailable_with_nothing_sent(broker):
    broker.post(ORDERS, body=connect_timeout())
    with pytest.raises(BrokerUnavailable) as caught:
        make_adapter().place_order(order_request())
    assert not isinstance(caught.value, BrokerOutcomeUnknown)


def test_html_2xx_on_submit_is_outcome_unknown(broker):
    broker.post(ORDERS, body="<html><body>OK</body></html>", status=200, content_type="text/html")
    with pytest.raises(BrokerOutcomeUnknown):
        make_adapter().place_order(order_request())


def test_truncated_json_on_submit_is_outcome_unknown(broker):
    broker.post(ORDERS, body=json.dumps(wire_order())[:120], status=200, content_type="application/json")
    with pytest.raises(BrokerOutcomeUnknown):
        make_adapter().place_order(order_request())


def test_html_403_from_a_proxy_is_unavailable_not_a_crash(broker):
    broker.post(ORDERS, body="<html><body>403 Forbidden</body></html>", status=403, content_type="text/html")
    with pytest.raises(BrokerUnavailable) as caught:
        make_adapter().place_order(order_request())
    assert not isinstance(caught.value, BrokerOutcomeUnknown)


# --- error table: reads and cancels ---------------------------------------------------------------


def test_401_on_account_is_credentials_refused(broker):
    broker.get(ACCOUNT, json=wire("error_401.json"), status=401)
    with pytest.raises(CredentialsRefused):
        make_adapter().account()


def test_get_unknown_order_is_order_not_found(broker):
    broker.get(f"{ORDERS}/{ORDER_ID}", json=wire("error_404_order.json"), status=404)
    with pytest.raises(OrderNotFound):
        make_adapter().get_order(ORDER_ID)


def test_get_with_an_id_that_is_not_a_uuid_is_order_not_found_without_a_call(broker):
    with pytest.raises(OrderNotFound):
        make_adapter().get_order("not-an-alpaca-id")
    assert len(broker.calls) == 0


def test_html_404_from_a_proxy_on_get_is_unavailable_not_order_not_found(broker):
    broker.get(f"{ORDERS}/{ORDER_ID}", body="<html><body>404 Not Found</body></html>", status=404,
               content_type="text/html")
    with pytest.raises(BrokerUnavailable):
        make_adapter().get_order(ORDER_ID)


def test_cancel_unknown_order_is_order_not_found(broker):
    broker.delete(f"{ORDERS}/{ORDER_ID}", json=wire("error_404_order.json"), status=404)
    with pytest.raises(OrderNotFound):
        make_adapter().cancel_order(ORDER_ID)


def test_cancel_of_a_final_order_is_broker_rejected(broker):
    broker.delete(f"{ORDERS}/{ORDER_ID}", json=wire("error_422_not_cancelable.json"), status=422)
    with pytest.raises(BrokerRejected, match="not cancelable"):
        make_adapter().cancel_order(ORDER_ID)


def test_cancel_204_returns_none(broker):
    broker.delete(f"{ORDERS}/{ORDER_ID}", status=204)
    assert make_adapter().cancel_order(ORDER_ID) is None


def test_5xx_on_read_is_broker_unavailable(broker):
    broker.get(POSITIONS, json={"code": 50010000, "message": "internal server error"}, status=502)
    with pytest.raises(BrokerUnavailable):
        make_adapter().positions()


def test_connection_error_on_read_is_broker_unavailable(broker):
    broker.get(POSITIONS, body=refused())
    with pytest.raises(BrokerUnavailable):
        make_adapter().positions()


def test_html_body_on_read_is_broker_unavailable(broker):
    broker.get(f"{ORDERS}/{ORDER_ID}", body="<html><body>maintenance</body></html>", status=200,
               content_type="text/html")
    with pytest.raises(BrokerUnavailable):
        make_adapter().get_order(ORDER_ID)


def test_truncated_json_on_read_is_broker_unavailable(broker):
    broker.get(ACCOUNT, body=json.dumps(wire("account.json"))[:200], status=200, content_type="application/json")
    with pytest.raises(BrokerUnavailable):
        make_adapter().account()


def test_unknown_order_status_from_the_wire_is_broker_unavailable(broker):
    broker.get(f"{ORDERS}/{ORDER_ID}", json=wire_order(status="teleported"))
    with pytest.raises(BrokerUnavailable):
        make_adapter().get_order(ORDER_ID)


# --- find_order: the lookup after an unknown outcome -----------------------------------------------


def test_find_order_returns_the_order_found_by_our_client_id(broker):
    request = order_request()
    broker.get(BY_CLIENT_ID, json=wire_order(client_order_id=request.broker_client_id))
    found = make_adapter().find_order(request, submitted_at=datetime.now(UTC))
    assert found.broker_order_id == ORDER_ID
    assert broker.calls[0].request.params == {"client_order_id": request.broker_client_id}


def test_find_order_404_is_none(broker):
    broker.get(BY_CLIENT_ID, json={"code": 40410000, "message": "order not found"}, status=404)
    assert make_adapter().find_order(order_request(), submitted_at=datetime.now(UTC)) is None


def test_find_order_when_alpaca_still_fails_is_broker_unavailable(broker):
    broker.get(BY_CLIENT_ID, body=HTML_504, status=504, content_type="text/html")
    with pytest.raises(BrokerUnavailable) as caught:
        make_adapter().find_order(order_request(), submitted_at=datetime.now(UTC))
    assert not isinstance(caught.value, BrokerOutcomeUnknown)


def test_find_order_with_refused_keys_is_broker_unavailable(broker):
    broker.get(BY_CLIENT_ID, json=wire("error_401.json"), status=401)
    with pytest.raises(BrokerUnavailable, match="credentials"):
        make_adapter().find_order(order_request(), submitted_at=datetime.now(UTC))


# --- order bodies sent ----------------------------------------------------------------------------


def test_limit_order_body_carries_our_client_id(equity_venue):
    request = order_request()
    equity_venue.adapter.place_order(request)
    assert equity_venue.fake.order_posts[-1]["client_order_id"] == request.broker_client_id


def test_limit_order_body_has_alpacas_fields(equity_venue):
    equity_venue.adapter.place_order(order_request())
    body = equity_venue.fake.order_posts[-1]
    assert {k: body[k] for k in ("symbol", "side", "type", "time_in_force", "qty", "limit_price")} == {
        "symbol": "AAPL", "side": "buy", "type": "limit", "time_in_force": "day", "qty": 2, "limit_price": 150}


def test_stop_with_stop_limit_price_is_sent_as_native_stop_limit(equity_venue):
    equity_venue.adapter.place_order(order_request(order_type=OrderType.STOP, limit_price=None,
                                                   stop_price=Decimal("230"), stop_limit_price=Decimal("231.5")))
    body = equity_venue.fake.order_posts[-1]
    assert (body["type"], body["stop_price"], body["limit_price"]) == ("stop_limit", 230, 231.5)


def test_stop_limit_order_reads_back_as_stop_with_stop_limit_price(equity_venue):
    placed = equity_venue.adapter.place_order(order_request(order_type=OrderType.STOP, limit_price=None,
                                                            stop_price=Decimal("230"),
                                                            stop_limit_price=Decimal("231.5")))
    assert (placed.order_type, placed.stop_price, placed.stop_limit_price) == (
        OrderType.STOP, Decimal("230"), Decimal("231.5"))


def test_plain_stop_is_sent_as_alpaca_stop(equity_venue):
    equity_venue.adapter.place_order(order_request(order_type=OrderType.STOP, limit_price=None,
                                                   stop_price=Decimal("230")))
    body = equity_venue.fake.order_posts[-1]
    assert body["type"] == "stop" and "limit_price" not in body


def test_bracket_is_sent_with_take_profit_and_stop_loss(equity_venue):
    equity_venue.adapter.place_order(order_request(limit_price=Decimal("188.2"), bracket=Bracket(
        take_profit=Decimal("205"), stop_loss=Decimal("179"))))
    body = equity_venue.fake.order_posts[-1]
    assert body["order_class"] == "bracket"
    assert body["take_profit"] == {"limit_price": 205} and body["stop_loss"] == {"stop_price": 179}


def test_bracket_with_stop_loss_limit_sends_the_stop_loss_limit_price(equity_venue):
    equity_venue.adapter.place_order(order_request(limit_price=Decimal("188.2"), bracket=Bracket(
        take_profit=Decimal("205"), stop_loss=Decimal("179"), stop_loss_limit=Decimal("178.5"))))
    assert equity_venue.fake.order_posts[-1]["stop_loss"] == {"stop_price": 179, "limit_price": 178.5}


def _bracket(venue, **bracket):
    return venue.adapter.place_order(order_request(limit_price=Decimal("188.2"), bracket=Bracket(
        take_profit=Decimal("205"), stop_loss=Decimal("179"), **bracket)))


def test_a_bracket_reply_carries_its_legs_held_as_accepted(equity_venue):
    placed = _bracket(equity_venue)
    take, stop_loss = placed.legs
    assert (take.order_type, take.limit_price, take.stop_price, take.side) == (OrderType.LIMIT, 205, None, Side.SELL)
    assert (stop_loss.order_type, stop_loss.stop_price, stop_loss.stop_limit_price) == (OrderType.STOP, 179, None)
    assert {take.status, stop_loss.status} == {OrderStatus.ACCEPTED}  # Alpaca's "held" until the entry fills
    assert take.broker_order_id != stop_loss.broker_order_id != placed.broker_order_id
    assert take.legs == stop_loss.legs == ()


def test_a_stop_limit_stop_loss_leg_keeps_its_limit(equity_venue):
    stop_loss = _bracket(equity_venue, stop_loss_limit=Decimal("178.5")).legs[1]
    assert (stop_loss.order_type, stop_loss.stop_price, stop_loss.stop_limit_price) == (OrderType.STOP, 179, 178.5)


def test_legs_are_read_nested_in_the_listing_and_by_their_own_ids(equity_venue):
    placed = _bracket(equity_venue)
    listed = equity_venue.adapter.list_orders(scope=ListScope.ALL)
    assert [o.broker_order_id for o in listed] == [placed.broker_order_id]
    assert [leg.broker_order_id for leg in listed[0].legs] == [leg.broker_order_id for leg in placed.legs]
    take = equity_venue.adapter.get_order(placed.legs[0].broker_order_id)
    assert take.order_type == OrderType.LIMIT and take.limit_price == 205


def test_take_profit_fills_and_alpaca_cancels_the_stop_loss(equity_venue):
    placed = _bracket(equity_venue)
    equity_venue.fake.set_price("AAPL", "188")  # the entry fills at its limit; the legs go live
    entry = equity_venue.adapter.get_order(placed.broker_order_id)
    assert entry.status == OrderStatus.FILLED and [leg.status for leg in entry.legs] == [OrderStatus.ACCEPTED] * 2
    equity_venue.fake.set_price("AAPL", "206")
    take, stop_loss = equity_venue.adapter.get_order(placed.broker_order_id).legs
    assert (take.status, take.avg_fill_price, stop_loss.status) == (OrderStatus.FILLED, 205, OrderStatus.CANCELED)


def test_a_leg_is_canceled_by_its_own_id(equity_venue):
    placed = _bracket(equity_venue)
    equity_venue.fake.set_price("AAPL", "188")
    equity_venue.adapter.cancel_order(placed.legs[1].broker_order_id)
    take, stop_loss = equity_venue.adapter.get_order(placed.broker_order_id).legs
    assert (take.status, stop_loss.status) == (OrderStatus.ACCEPTED, OrderStatus.CANCELED)


def test_fractional_qty_is_sent_as_given(equity_venue):
    equity_venue.adapter.place_order(order_request(qty=Decimal("0.125"), order_type=OrderType.MARKET,
                                                   limit_price=None))
    assert equity_venue.fake.order_posts[-1]["qty"] == 0.125


def test_time_in_force_is_sent_as_given(equity_venue):
    equity_venue.adapter.place_order(order_request(time_in_force=TimeInForce.GTC))
    assert equity_venue.fake.order_posts[-1]["time_in_force"] == "gtc"


def test_qty_with_more_digits_than_a_float_keeps_is_refused_before_sending(broker):
    with pytest.raises(BrokerRejected, match="digits"):
        make_adapter().place_order(order_request(qty=Decimal("1.00000000000000000001")))
    assert len(broker.calls) == 0


def test_limit_order_without_limit_price_is_refused_before_sending(broker):
    with pytest.raises(BrokerRejected, match="limit_price"):
        make_adapter().place_order(order_request(limit_price=None))
    assert len(broker.calls) == 0


# --- crypto ---------------------------------------------------------------------------------------


def test_crypto_day_order_is_refused_without_any_http_call(broker):
    crypto = order_request(asset_class=AssetClass.CRYPTO, symbol="BTC/USD", qty=Decimal("0.01"),
                           limit_price=Decimal("50000"), time_in_force=TimeInForce.DAY)
    with pytest.raises(BrokerRejected, match="gtc or ioc"):
        make_adapter(asset_class=AssetClass.CRYPTO).place_order(crypto)
    assert len(broker.calls) == 0


def test_crypto_order_is_sent_with_the_slash_symbol(crypto_venue):
    crypto_venue.adapter.place_order(order_request(asset_class=AssetClass.CRYPTO, symbol="BTC/USD",
                                                   qty=Decimal("0.01"), limit_price=Decimal("50000"),
                                                   time_in_force=TimeInForce.GTC))
    assert crypto_venue.fake.order_posts[-1]["symbol"] == "BTC/USD"


def test_crypto_position_btcusd_is_reported_as_btc_slash_usd(broker):
    broker.get(POSITIONS, json=[wire("position_crypto.json")])
    [position] = make_adapter(asset_class=AssetClass.CRYPTO).positions()
    assert position.symbol == "BTC/USD"


def test_crypto_market_buy_shows_in_positions_under_the_order_symbol(crypto_venue):
    crypto_venue.adapter.place_order(order_request(asset_class=AssetClass.CRYPTO, symbol="BTC/USD",
                                                   qty=Decimal("0.01"), order_type=OrderType.MARKET,
                                                   limit_price=None, time_in_force=TimeInForce.GTC))
    assert {p.symbol: p.qty for p in crypto_venue.adapter.positions()} == {"BTC/USD": Decimal("0.01")}


def test_crypto_latest_price_reads_the_crypto_latest_trade(broker):
    broker.get(f"{DATA_URL}/v1beta3/crypto/us/latest/trades", json=wire("latest_trade_crypto.json"))
    assert make_adapter(asset_class=AssetClass.CRYPTO).latest_price("BTC/USD") == Decimal("64250.5")


def test_crypto_account_buying_power_is_the_non_marginable_one(broker):
    broker.get(ACCOUNT, json=wire("account.json"))
    assert make_adapter(asset_class=AssetClass.CRYPTO).account().buying_power == Decimal("9342.1")


# --- wire -> our types ----------------------------------------------------------------------------


def test_every_alpaca_order_status_has_a_mapping():
    assert set(alpaca_enums.OrderStatus) == set(STATUS_FROM_WIRE)


@pytest.mark.parametrize(("wire_status", "ours"), [
    ("pending_new", OrderStatus.PENDING), ("new", OrderStatus.ACCEPTED), ("accepted", OrderStatus.ACCEPTED),
    ("held", OrderStatus.ACCEPTED), ("pending_cancel", OrderStatus.ACCEPTED),
    ("partially_filled", OrderStatus.PARTIALLY_FILLED), ("filled", OrderStatus.FILLED),
    ("canceled", OrderStatus.CANCELED), ("replaced", OrderStatus.CANCELED), ("expired", OrderStatus.EXPIRED),
    ("rejected", OrderStatus.REJECTED),
])
def test_order_status_maps_to_our_vocabulary(broker, wire_status, ours):
    broker.get(f"{ORDERS}/{ORDER_ID}", json=wire_order(status=wire_status))
    assert make_adapter().get_order(ORDER_ID).status == ours


def test_order_numbers_are_decimals_and_times_aware_utc(broker):
    broker.get(f"{ORDERS}/{ORDER_ID}", json=wire("order_crypto_filled.json") | {"id": ORDER_ID})
    got = make_adapter(asset_class=AssetClass.CRYPTO).get_order(ORDER_ID)
    assert (got.qty, got.filled_qty, got.avg_fill_price) == (Decimal("0.01"), Decimal("0.01"), Decimal("64250.5"))
    assert got.submitted_at == datetime(2026, 11, 26, 3, 14, 7, 116081, tzinfo=UTC)
    assert got.updated_at.utcoffset() == timedelta(0)


def test_short_position_has_negative_qty(broker):
    broker.get(POSITIONS, json=[wire("position_us_equity.json") | {"qty": "-5", "side": "short"}])
    [position] = make_adapter().positions()
    assert position.qty == Decimal("-5") and position.side == "SHORT"


def test_position_maps_prices_and_pnl_as_decimals(broker):
    broker.get(POSITIONS, json=[wire("position_us_equity.json")])
    [position] = make_adapter().positions()
    assert (position.avg_entry_price, position.current_price, position.unrealized_pnl,
            position.unrealized_pnl_pct) == (Decimal("180.12"), Decimal("189.5"), Decimal("46.9"),
                                             Decimal("0.0520764"))


def test_positions_of_the_other_asset_class_are_left_out(broker):
    broker.get(POSITIONS, json=[wire("position_us_equity.json"), wire("position_crypto.json")])
    assert [p.symbol for p in make_adapter().positions()] == ["AAPL"]


def test_account_maps_equity_cash_buying_power_and_last_equity(broker):
    broker.get(ACCOUNT, json=wire("account.json"))
    acct = make_adapter().account()
    assert (acct.equity, acct.cash, acct.buying_power, acct.last_equity, acct.currency) == (
        Decimal("10342.1"), Decimal("9342.1"), Decimal("18684.2"), Decimal("10201.37"), "USD")


def test_account_metadata_holds_no_account_number(broker):
    broker.get(ACCOUNT, json=wire("account.json"))
    assert "PA2Z1S6JX8KQ" not in json.dumps(make_adapter().account().metadata)


def test_list_orders_sends_scope_since_and_symbol(broker):
    broker.get(ORDERS, json=[])
    make_adapter().list_orders(scope=ListScope.CLOSED, symbol="AAPL", since=datetime(2026, 11, 1, tzinfo=UTC))
    params = broker.calls[0].request.params
    assert (params["status"], params["symbols"], params["after"]) == ("closed", "AAPL", "2026-11-01T00:00:00+00:00")


def test_list_orders_skips_a_trailing_stop_placed_elsewhere(broker):
    trailing = wire_order(id=str(uuid.uuid4()), type="trailing_stop", order_type="trailing_stop", limit_price=None,
                          trail_percent="1.5")
    broker.get(ORDERS, json=[trailing, wire_order()])
    assert [o.broker_order_id for o in make_adapter().list_orders()] == [ORDER_ID]


def test_stock_latest_price_reads_the_latest_trade_from_the_data_url(broker):
    broker.get(f"{DATA_URL}/v2/stocks/trades/latest", json=wire("latest_trade_stock.json"))
    assert make_adapter().latest_price("AAPL") == Decimal("189.5")


def test_latest_price_of_a_symbol_without_trades_is_broker_rejected(broker):
    broker.get(f"{DATA_URL}/v2/stocks/trades/latest", json={"trades": {}})
    with pytest.raises(BrokerRejected, match="ZZZZ"):
        make_adapter().latest_price("ZZZZ")


# --- logs and secrets -----------------------------------------------------------------------------


def test_each_call_logs_one_line_with_outcome_and_latency(broker, caplog):
    broker.get(ACCOUNT, json=wire("account.json"))
    with caplog.at_level(logging.INFO, logger="brokers.adapters.alpaca"):
        make_adapter().account()
    [record] = [r for r in caplog.records if r.name == "brokers.adapters.alpaca"]
    assert (record.operation, record.outcome, record.connection_id) == ("account", "ok", 7)
    assert isinstance(record.latency_ms, int)


def test_secret_is_in_no_log_line_nor_error(broker, caplog):
    broker.post(ORDERS, json=wire("error_401.json"), status=401)
    with caplog.at_level(logging.DEBUG), pytest.raises(CredentialsRefused) as caught:
        make_adapter().place_order(order_request())
    assert SECRET_KEY not in caplog.text and SECRET_KEY not in str(caught.value)


def test_adapter_repr_shows_no_keys():
    text = repr(make_adapter())
    assert API_KEY not in text and SECRET_KEY not in text


# --- the shared contract, beyond its default venue (us_equity paper) ------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("behaviour", [name for name in dir(contract) if name.startswith("test_")])
@pytest.mark.parametrize(("asset_class", "live"), [(AssetClass.CRYPTO, False), (AssetClass.CRYPTO, True),
                                                   (AssetClass.US_EQUITY, True)])
def test_contract_holds_for_crypto_and_live_connections(behaviour, asset_class, live):
    with Venue(asset_class=asset_class, live=live) as venue:
        getattr(contract, behaviour)(venue)
