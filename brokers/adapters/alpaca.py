"""Alpaca (us_equity and crypto, paper and live) through the official alpaca-py.

Wire facts: shared/brokers/alpaca.md. What this module adds to alpaca-py:

- a timeout on every HTTP call (alpaca-py sets none): a requests adapter mounted on each client's
  Session gives every request `timeout=BROKER_TIMEOUT_SECONDS`;
- no blind retry: alpaca-py's own retry (every verb, POST included, on 429/504, sleeping 3 s) is
  switched off; reads get one immediate retry of our own, an order POST is never resent;
- the error taxonomy of brokers.errors, read defensively from the reply (APIError.code and
  .message parse the body as JSON on every access and raise on an HTML body);
- explicit tables from alpaca-py's enums to ours: a value missing from a table raises.

The clients run with raw_data=True, so the HTTP call and the reading of its reply are separate
steps: a garbled 2xx on an order POST is told apart from a refusal (BrokerOutcomeUnknown).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

import requests
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.common.rest import RESTClient
from alpaca.data.historical.crypto import CryptoHistoricalDataClient
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.models.trades import Trade
from alpaca.data.requests import CryptoLatestTradeRequest, StockLatestTradeRequest
from alpaca.trading import enums as wire
from alpaca.trading.client import TradingClient
from alpaca.trading.models import Order as WireOrder
from alpaca.trading.models import Position as WirePosition
from alpaca.trading.models import TradeAccount as WireAccount
from alpaca.trading.requests import (
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    StopLimitOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
)
from brokers.conf import conf
from pydantic import ValidationError
from requests.adapters import HTTPAdapter

from brokers.base import UniqueClientIds
from brokers.http import never_sent
from brokers.types import (
    Account,
    AssetClass,
    BrokerOrder,
    Environment,
    ListScope,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
)
from brokers.errors import (
    BrokerNotConfigured,
    BrokerOutcomeUnknown,
    BrokerRejected,
    BrokerUnavailable,
    CredentialsRefused,
    DomainError,
    DuplicateClientId,
    InsufficientFunds,
    OrderNotFound,
)

logger = logging.getLogger(__name__)

READ_ATTEMPTS = 2  # a read is tried at most twice, without sleeping; an order POST exactly once
LIST_LIMIT = 500  # Alpaca's maximum page of GET /v2/orders
INSUFFICIENT_FUNDS_CODE = 40310000
DUPLICATE_CLIENT_ID = "client_order_id must be unique"
CRYPTO_TIME_IN_FORCE = frozenset({TimeInForce.GTC, TimeInForce.IOC})
CRYPTO_QUOTES = ("USDT", "USDC", "USD", "BTC")  # longest first: BTCUSDT is BTC/USDT, not BTCUSD/T

# --- explicit tables between alpaca-py's enums and ours (rule 9) --------------------------------

STATUS_FROM_WIRE: dict[wire.OrderStatus, OrderStatus] = {
    wire.OrderStatus.PENDING_NEW: OrderStatus.PENDING,
    wire.OrderStatus.PENDING_REVIEW: OrderStatus.PENDING,
    wire.OrderStatus.NEW: OrderStatus.ACCEPTED,
    wire.OrderStatus.ACCEPTED: OrderStatus.ACCEPTED,
    wire.OrderStatus.ACCEPTED_FOR_BIDDING: OrderStatus.ACCEPTED,
    wire.OrderStatus.PENDING_CANCEL: OrderStatus.ACCEPTED,
    wire.OrderStatus.PENDING_REPLACE: OrderStatus.ACCEPTED,
    wire.OrderStatus.HELD: OrderStatus.ACCEPTED,
    wire.OrderStatus.CALCULATED: OrderStatus.ACCEPTED,
    wire.OrderStatus.STOPPED: OrderStatus.ACCEPTED,
    wire.OrderStatus.SUSPENDED: OrderStatus.ACCEPTED,
    wire.OrderStatus.DONE_FOR_DAY: OrderStatus.ACCEPTED,
    wire.OrderStatus.PARTIALLY_FILLED: OrderStatus.PARTIALLY_FILLED,
    wire.OrderStatus.FILLED: OrderStatus.FILLED,
    wire.OrderStatus.CANCELED: OrderStatus.CANCELED,
    wire.OrderStatus.REPLACED: OrderStatus.CANCELED,
    wire.OrderStatus.EXPIRED: OrderStatus.EXPIRED,
    wire.OrderStatus.REJECTED: OrderStatus.REJECTED,
}
SIDE_FROM_WIRE = {wire.OrderSide.BUY: Side.BUY, wire.OrderSide.SELL: Side.SELL}
SIDE_TO_WIRE = {Side.BUY: wire.OrderSide.BUY, Side.SELL: wire.OrderSide.SELL}
TYPE_FROM_WIRE = {  # stop_limit is our STOP carrying stop_limit_price (brokers/types.py)
    wire.OrderType.MARKET: OrderType.MARKET,
    wire.OrderType.LIMIT: OrderType.LIMIT,
    wire.OrderType.STOP: OrderType.STOP,
    wire.OrderType.STOP_LIMIT: OrderType.STOP,
}
TIF_FROM_WIRE = {
    wire.TimeInForce.DAY: TimeInForce.DAY,
    wire.TimeInForce.GTC: TimeInForce.GTC,
    wire.TimeInForce.IOC: TimeInForce.IOC,
    wire.TimeInForce.FOK: TimeInForce.FOK,
}
TIF_TO_WIRE = {ours: theirs for theirs, ours in TIF_FROM_WIRE.items()}
SCOPE_TO_WIRE = {
    ListScope.OPEN: wire.QueryOrderStatus.OPEN,
    ListScope.CLOSED: wire.QueryOrderStatus.CLOSED,
    ListScope.ALL: wire.QueryOrderStatus.ALL,
}
ASSET_CLASS_TO_WIRE = {AssetClass.US_EQUITY: wire.AssetClass.US_EQUITY, AssetClass.CRYPTO: wire.AssetClass.CRYPTO}
POSITION_SIGN = {wire.PositionSide.LONG: 1, wire.PositionSide.SHORT: -1}


class _Unreadable(Exception):
    """A reply we cannot read: not the shape we know, or a value missing from our tables."""


class _Unrepresentable(_Unreadable):
    """A well-formed Alpaca order that our types cannot express (trailing stop, notional, opg...).

    The service never places such orders, so a listing skips them; anywhere else they are unreadable.
    """


class _AlreadyPlaced(Exception):
    """Alpaca refused a placement because our client id is taken: the order exists, look it up."""


class _TimeoutHTTPAdapter(HTTPAdapter):
    """Gives every request through the Session a timeout (alpaca-py passes none)."""

    def __init__(self, timeout: float, **kwargs: Any):
        self.timeout = timeout
        super().__init__(**kwargs)

    def send(self, request, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, **kwargs)


def _harden(client: RESTClient, *, timeout: float) -> RESTClient:
    """Mount the timeout and switch off alpaca-py's retry (its constructors offer neither)."""
    transport = _TimeoutHTTPAdapter(timeout)
    client._session.mount("https://", transport)
    client._session.mount("http://", transport)
    # RESTClient retries every verb on 429/504, sleeping 3 s each time; an order POST resent after a
    # 504 may be a second order. Zero attempts: one request per call, no sleeping.
    client._retry = 0
    client._retry_wait = 0
    return client


class AlpacaAdapter(UniqueClientIds):
    """One Alpaca account of one user, for one asset class, paper or live.

    client_ids: Alpaca refuses a second order with a client_order_id already used (422 "client
    order id must be unique"), so the service may re-send a lost order under it; a lookup by it
    that finds nothing is not proof of absence (absence_settled from UniqueClientIds).
    """

    exchange = "alpaca"
    SUPPORTED = frozenset({
        (AssetClass.US_EQUITY, Environment.PAPER),
        (AssetClass.US_EQUITY, Environment.LIVE),
        (AssetClass.CRYPTO, Environment.PAPER),
        (AssetClass.CRYPTO, Environment.LIVE),
    })
    CREDENTIAL_FIELDS = ("api_key", "secret_key")

    def __init__(self, *, credentials: dict, asset_class: AssetClass, live: bool, connection_id: int):
        if asset_class not in ASSET_CLASS_TO_WIRE:
            raise BrokerNotConfigured(f"Alpaca has no {asset_class} trading.")
        api_key, secret_key = (str((credentials or {}).get(name) or "") for name in self.CREDENTIAL_FIELDS)
        if not api_key or not secret_key:
            raise CredentialsRefused("The stored Alpaca credentials are incomplete; "
                                     "reconnect with an API key and secret.")
        self.asset_class = AssetClass(asset_class)
        self.live = live
        self.connection_id = connection_id
        self.currency = "USD"
        timeout = conf.BROKER_TIMEOUT_SECONDS
        base_url = (conf.ALPACA_LIVE_URL if live else conf.ALPACA_PAPER_URL).rstrip("/")
        data_url = conf.ALPACA_DATA_URL.rstrip("/")
        self._trading = _harden(TradingClient(api_key, secret_key, paper=not live, raw_data=True,
                                              url_override=base_url), timeout=timeout)
        if self.asset_class == AssetClass.CRYPTO:
            data = CryptoHistoricalDataClient(api_key, secret_key, raw_data=True, url_override=data_url)
        else:
            data = StockHistoricalDataClient(api_key, secret_key, raw_data=True, url_override=data_url)
        self._data = _harden(data, timeout=timeout)

    def __repr__(self) -> str:  # never the keys
        env = Environment.LIVE if self.live else Environment.PAPER
        return f"<AlpacaAdapter connection={self.connection_id} {self.asset_class} {env}>"

    # --- the BrokerAdapter interface --------------------------------------------------------------

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        request = self._order_request(order)  # refusals decided here send nothing
        context = {"broker_client_id": order.broker_client_id, "symbol": order.symbol}
        try:
            return self._call("place_order", lambda: self._trading.submit_order(request), self._order_from_reply,
                              placing=True, **context)
        except _AlreadyPlaced:
            pass
        # Alpaca says our client id is taken: the order exists, so return it (never a second order),
        # and never a rejection, which would invite a retry under a new id.
        try:
            found = self.find_order(order, submitted_at=datetime.now(UTC))
        except BrokerUnavailable as exc:
            raise DuplicateClientId("Alpaca already has an order with this client id, but it could not be "
                                    "read back yet.") from exc
        if found is None:
            raise DuplicateClientId("Alpaca already has an order with this client id, but does not show it yet.")
        return found

    def cancel_order(self, broker_order_id: str, *, symbol: str | None = None) -> None:
        order_id = _order_uuid(broker_order_id)
        self._call("cancel_order", lambda: self._trading.cancel_order_by_id(order_id), lambda reply: None,
                   order_lookup=True, broker_order_id=broker_order_id)

    def get_order(self, broker_order_id: str, *, symbol: str | None = None) -> BrokerOrder:
        order_id = _order_uuid(broker_order_id)
        return self._call("get_order", lambda: self._trading.get_order_by_id(order_id), self._order_from_reply,
                          order_lookup=True, attempts=READ_ATTEMPTS, broker_order_id=broker_order_id)

    def list_orders(self, *, scope: ListScope = ListScope.ALL, symbol: str | None = None,
                    since: datetime | None = None) -> list[BrokerOrder]:
        query = GetOrdersRequest(status=SCOPE_TO_WIRE[scope], limit=LIST_LIMIT, after=since,
                                 direction=Sort.DESC, nested=True, symbols=[symbol] if symbol else None)
        return self._call("list_orders", lambda: self._trading.get_orders(query), self._orders_from_reply,
                          attempts=READ_ATTEMPTS)

    def positions(self) -> list[Position]:
        return self._call("positions", self._trading.get_all_positions, self._positions_from_reply,
                          attempts=READ_ATTEMPTS)

    def account(self) -> Account:
        return self._call("account", self._trading.get_account, self._account_from_reply, attempts=READ_ATTEMPTS)

    def find_order(self, order: OrderRequest, *, submitted_at: datetime) -> BrokerOrder | None:
        """GET /v2/orders:by_client_order_id: the order; None on a 404 (not shown now, which is no proof
        that it was never placed); BrokerUnavailable when the lookup fails."""
        client_id = order.broker_client_id
        try:
            return self._call("find_order", lambda: self._trading.get_order_by_client_id(client_id),
                              self._order_from_reply, order_lookup=True, attempts=READ_ATTEMPTS,
                              broker_client_id=client_id)
        except OrderNotFound:
            return None
        except BrokerUnavailable:
            raise
        except DomainError as exc:  # keys refused, a refusal: either way the lookup cannot decide
            raise BrokerUnavailable(f"The order could not be looked up at Alpaca: {exc.detail}") from exc

    def latest_price(self, symbol: str) -> Decimal:
        def fetch():
            if self.asset_class == AssetClass.CRYPTO:
                return self._data.get_crypto_latest_trade(CryptoLatestTradeRequest(symbol_or_symbols=symbol))
            return self._data.get_stock_latest_trade(StockLatestTradeRequest(symbol_or_symbols=symbol))

        return self._call("latest_price", fetch, lambda reply: _price_from_reply(reply, symbol),
                          attempts=READ_ATTEMPTS, symbol=symbol)

    # --- one broker call: timing, log line, error taxonomy -----------------------------------------

    def _call(self, operation: str, request: Callable[[], Any], read: Callable[[Any], Any], *,
              placing: bool = False, order_lookup: bool = False, attempts: int = 1, **context: Any) -> Any:
        """Send `request`, read its reply with `read`; map every failure to brokers.errors.

        placing: the request is an order POST, so a failure after it may have been sent is
        BrokerOutcomeUnknown. order_lookup: a 404 means "no such order" (OrderNotFound).
        attempts: 2 for reads (one immediate retry on 429, 5xx or no connection), else 1.
        """
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                reply = request()
            except (APIError, requests.RequestException, ValueError, TypeError, KeyError, AttributeError) as exc:
                error, retry, outcome, status = _translate(exc, operation=operation, placing=placing,
                                                           order_lookup=order_lookup)
                self._log(operation, outcome, started, http_status=status, attempt=attempt, **context)
                if retry and attempt < attempts:
                    continue
                raise error from exc
            try:
                result = read(reply)
            except (_Unreadable, ValueError, TypeError, KeyError, AttributeError) as exc:
                self._log(operation, "unreadable", started, exc_info=exc, attempt=attempt, **context)
                unknown = BrokerOutcomeUnknown if placing else BrokerUnavailable
                raise unknown(f"Alpaca's reply to {operation} could not be read.") from exc
            except DomainError as exc:
                self._log(operation, exc.code.lower(), started, attempt=attempt, **context)
                raise
            self._log(operation, "ok", started, attempt=attempt, **context)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _log(self, operation: str, outcome: str, started: float, *, exc_info: BaseException | None = None,
             **context: Any) -> None:
        """The one log line of a broker call: outcome and latency, ids for context, never a secret."""
        latency_ms = round((time.monotonic() - started) * 1000)
        level = logging.INFO if outcome == "ok" else logging.WARNING
        environment = Environment.LIVE if self.live else Environment.PAPER
        logger.log(level, "alpaca %s %s %s in %d ms", environment, operation, outcome, latency_ms, exc_info=exc_info,
                   extra={"exchange": self.exchange, "connection_id": self.connection_id,
                          "environment": str(environment), "operation": operation, "outcome": outcome,
                          "latency_ms": latency_ms, **context})

    # --- our types -> alpaca-py request models ----------------------------------------------------

    def _order_request(self, order: OrderRequest):
        if order.asset_class != self.asset_class:
            raise BrokerRejected(f"This Alpaca connection trades {self.asset_class}, not {order.asset_class}.")
        if self.asset_class == AssetClass.CRYPTO and order.time_in_force not in CRYPTO_TIME_IN_FORCE:
            raise BrokerRejected(f"Alpaca crypto orders accept time_in_force gtc or ioc, not {order.time_in_force}.")
        fields: dict[str, Any] = {
            "symbol": order.symbol,
            "qty": _wire_number(order.qty, "qty"),
            "side": SIDE_TO_WIRE[order.side],
            "time_in_force": TIF_TO_WIRE[order.time_in_force],
            "client_order_id": order.broker_client_id,
        }
        if order.bracket is not None:
            fields["order_class"] = wire.OrderClass.BRACKET
            fields["take_profit"] = TakeProfitRequest(limit_price=_wire_number(order.bracket.take_profit,
                                                                               "take_profit"))
            fields["stop_loss"] = StopLossRequest(
                stop_price=_wire_number(order.bracket.stop_loss, "stop_loss"),
                limit_price=_wire_number(order.bracket.stop_loss_limit, "stop_loss_limit"))
        stop_limit = order.stop_limit_price
        if order.order_type == OrderType.STOP_LIMIT and stop_limit is None:
            stop_limit = order.limit_price
        try:
            if order.order_type == OrderType.MARKET:
                return MarketOrderRequest(**fields)
            if order.order_type == OrderType.LIMIT:
                return LimitOrderRequest(limit_price=_required(order.limit_price, "limit_price"), **fields)
            if order.order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and stop_limit is not None:
                return StopLimitOrderRequest(stop_price=_required(order.stop_price, "stop_price"),
                                             limit_price=_wire_number(stop_limit, "stop_limit_price"), **fields)
            if order.order_type == OrderType.STOP:
                return StopOrderRequest(stop_price=_required(order.stop_price, "stop_price"), **fields)
        except ValidationError as exc:
            first = exc.errors()[0].get("msg", "invalid order") if exc.errors() else "invalid order"
            raise BrokerRejected(f"Alpaca would refuse this order: {first}") from None
        raise BrokerRejected(f"Alpaca has no {order.order_type} orders.")

    # --- alpaca-py reply models -> our types -------------------------------------------------------

    def _order_from_reply(self, reply: Any) -> BrokerOrder:
        return self._order_from_wire(WireOrder(**_mapping(reply)))

    def _orders_from_reply(self, reply: Any) -> list[BrokerOrder]:
        if not isinstance(reply, list):
            raise _Unreadable(f"expected a list of orders, got {type(reply).__name__}")
        wanted = ASSET_CLASS_TO_WIRE[self.asset_class]
        orders = []
        for raw in reply:
            model = WireOrder(**_mapping(raw))
            if model.asset_class != wanted:
                continue
            try:
                orders.append(self._order_from_wire(model))
            except _Unrepresentable as exc:  # not placed by this service (trailing stop, notional...)
                logger.info("alpaca list_orders skips order %s: %s", model.id, exc,
                            extra={"exchange": self.exchange, "connection_id": self.connection_id})
        return orders

    def _order_from_wire(self, model: WireOrder) -> BrokerOrder:
        if model.symbol is None or model.side is None:
            raise _Unrepresentable(f"{model.order_class} order without a symbol or side")
        if model.qty is None:
            raise _Unrepresentable("notional order")
        wire_type = model.type or model.order_type
        if wire_type not in TYPE_FROM_WIRE:
            raise _Unrepresentable(f"order type {wire_type}")
        if model.time_in_force not in TIF_FROM_WIRE:
            raise _Unrepresentable(f"time_in_force {model.time_in_force}")
        if model.status not in STATUS_FROM_WIRE:
            raise _Unreadable(f"order status {model.status!r} has no mapping")
        qty = _decimal(model.qty)
        filled_qty = _decimal(model.filled_qty) if model.filled_qty is not None else Decimal(0)
        status = STATUS_FROM_WIRE[model.status]
        if status == OrderStatus.ACCEPTED and 0 < filled_qty < qty:  # e.g. pending_cancel with a fill
            status = OrderStatus.PARTIALLY_FILLED
        avg_fill = _decimal(model.filled_avg_price) if model.filled_avg_price is not None else None
        if avg_fill is not None and filled_qty == 0:
            avg_fill = None  # Alpaca can show 0 before any fill
        limit_price = _decimal(model.limit_price) if model.limit_price is not None else None
        stop_price = _decimal(model.stop_price) if model.stop_price is not None else None
        return BrokerOrder(
            broker_order_id=str(model.id),
            broker_client_id=model.client_order_id,
            symbol=_order_symbol(model.symbol, self.asset_class),
            side=SIDE_FROM_WIRE[model.side],
            qty=qty,
            filled_qty=filled_qty,
            avg_fill_price=avg_fill,
            order_type=TYPE_FROM_WIRE[wire_type],
            status=status,
            submitted_at=_utc(model.submitted_at),
            updated_at=_utc(model.updated_at),
            limit_price=limit_price,
            stop_price=stop_price,
            stop_limit_price=limit_price if wire_type == wire.OrderType.STOP_LIMIT else None,
            time_in_force=TIF_FROM_WIRE[model.time_in_force],
            # A bracket's take-profit (limit) and stop-loss (stop / stop_limit) orders; "held" until
            # the entry fills, which maps to accepted (STATUS_FROM_WIRE).
            legs=tuple(self._order_from_wire(leg) for leg in model.legs or ()),
        )

    def _positions_from_reply(self, reply: Any) -> list[Position]:
        if not isinstance(reply, list):
            raise _Unreadable(f"expected a list of positions, got {type(reply).__name__}")
        wanted = ASSET_CLASS_TO_WIRE[self.asset_class]
        positions = []
        for raw in reply:
            model = WirePosition(**_mapping(raw))
            if model.asset_class != wanted:
                continue
            if model.side not in POSITION_SIGN:
                raise _Unreadable(f"position side {model.side!r} has no mapping")
            qty = _decimal(model.qty)
            if (qty > 0 and POSITION_SIGN[model.side] < 0) or (qty < 0 and POSITION_SIGN[model.side] > 0):
                qty = -qty
            positions.append(Position(
                symbol=_order_symbol(model.symbol, self.asset_class),
                qty=qty,
                avg_entry_price=_decimal(model.avg_entry_price),
                current_price=_decimal(_present(model.current_price, "current_price")),
                unrealized_pnl=_decimal(_present(model.unrealized_pl, "unrealized_pl")),
                unrealized_pnl_pct=_decimal(_present(model.unrealized_plpc, "unrealized_plpc")),
                currency=self.currency,
                metadata={},
            ))
        return positions

    def _account_from_reply(self, reply: Any) -> Account:
        model = WireAccount(**_mapping(reply))
        currency = model.currency or self.currency
        if currency != self.currency:
            raise _Unreadable(f"account currency {currency!r}")
        buying_power = model.buying_power
        if self.asset_class == AssetClass.CRYPTO:  # crypto cannot be bought on margin
            buying_power = model.non_marginable_buying_power or model.cash
        metadata = {"status": model.status.value, "trading_blocked": model.trading_blocked,
                    "account_blocked": model.account_blocked}
        if model.pattern_day_trader is not None:  # left Alpaca's replies on 2026-07-06
            metadata["pattern_day_trader"] = model.pattern_day_trader
        return Account(
            equity=_decimal(_present(model.equity, "equity")),
            buying_power=_decimal(_present(buying_power, "buying_power")),
            cash=_decimal(_present(model.cash, "cash")),
            currency=currency,
            as_of=datetime.now(UTC),
            last_equity=_decimal(model.last_equity) if model.last_equity is not None else None,
            metadata=metadata,
        )


# --- error taxonomy -------------------------------------------------------------------------------


def _translate(exc: Exception, *, operation: str, placing: bool,
               order_lookup: bool) -> tuple[Exception, bool, str, int | None]:
    """An exception from alpaca-py's HTTP call -> (our error, retry a read?, log outcome, HTTP status)."""
    unknown = BrokerOutcomeUnknown if placing else BrokerUnavailable
    if isinstance(exc, APIError):
        return _from_api_error(exc, operation=operation, placing=placing, order_lookup=order_lookup)
    if isinstance(exc, requests.exceptions.JSONDecodeError) or not isinstance(exc, requests.RequestException):
        # A 2xx whose body is not the JSON alpaca-py expects (HTML, truncated, wrong shape).
        return unknown(f"Alpaca's reply to {operation} could not be read."), False, "unreadable", None
    if never_sent(exc):
        return (BrokerUnavailable(f"Alpaca could not be reached ({type(exc).__name__}); nothing was sent."),
                True, "unreachable", None)
    if isinstance(exc, requests.Timeout):
        return unknown(f"Alpaca did not answer {operation} in time."), False, "timeout", None
    return unknown(f"The connection to Alpaca failed during {operation} ({type(exc).__name__})."), True, \
        "connection_error", None


def _from_api_error(exc: APIError, *, operation: str, placing: bool,
                    order_lookup: bool) -> tuple[Exception, bool, str, int | None]:
    status = exc.status_code or 0
    code, message = _error_body(exc)
    outcome = f"http_{status}"
    if status == 401:
        return CredentialsRefused(), False, outcome, status
    if status == 429:
        return BrokerUnavailable("Alpaca is rate-limiting this account; try again shortly."), True, outcome, status
    if status >= 500:
        unknown = BrokerOutcomeUnknown if placing else BrokerUnavailable
        return unknown(f"Alpaca answered {status} to {operation}."), True, outcome, status
    if code is None and message is None:  # a 4xx that is not Alpaca's JSON (a proxy's HTML page)
        return BrokerUnavailable(f"Alpaca answered {status} to {operation} with an unreadable body."), False, \
            outcome, status
    message = message or f"HTTP {status}"
    if placing and status == 422 and DUPLICATE_CLIENT_ID in message.lower():
        return _AlreadyPlaced(message), False, outcome, status
    if status == 403 and code == INSUFFICIENT_FUNDS_CODE:
        return InsufficientFunds(f"Alpaca: {message}"), False, outcome, status
    if status == 404:
        if order_lookup:
            return OrderNotFound(), False, outcome, status
        return BrokerUnavailable(f"Alpaca answered 404 to {operation}."), False, outcome, status
    return BrokerRejected(f"Alpaca rejected {operation.replace('_', ' ')}: {message}"), False, outcome, status


def _error_body(exc: APIError) -> tuple[int | None, str | None]:
    """(code, message) of Alpaca's error body, or (None, None) when it is not that JSON.

    Never APIError.code / .message: they json.loads the body on each access and raise on HTML,
    and a 401's body has no code.
    """
    try:
        body = exc.response.json() if exc.response is not None else None
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code = body.get("code")
    message = body.get("message")
    return (code if isinstance(code, int) else None), (str(message) if message is not None else None)


# --- small readers --------------------------------------------------------------------------------


def _order_uuid(broker_order_id: str) -> UUID:
    try:
        return UUID(str(broker_order_id))
    except ValueError:
        raise OrderNotFound() from None  # Alpaca's ids are UUIDs: anything else is no order of theirs


def _mapping(raw: Any) -> dict:
    if not isinstance(raw, dict):
        raise _Unreadable(f"expected a JSON object, got {type(raw).__name__}")
    return raw


def _decimal(value: Any) -> Decimal:
    if value is None or isinstance(value, bool):
        raise _Unreadable(f"expected a number, got {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _Unreadable(f"expected a number, got {value!r}") from None
    if not number.is_finite():
        raise _Unreadable(f"expected a finite number, got {value!r}")
    return number


def _present(value: Any, name: str) -> Any:
    if value is None:
        raise _Unreadable(f"{name} is missing")
    return value


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:  # Alpaca's stamps are UTC ("...Z")
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _order_symbol(symbol: str, asset_class: AssetClass) -> str:
    """Alpaca reports crypto positions as BTCUSD; orders and market data use BTC/USD."""
    if asset_class != AssetClass.CRYPTO or "/" in symbol:
        return symbol
    for quote in CRYPTO_QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return f"{symbol[: -len(quote)]}/{quote}"
    raise _Unreadable(f"crypto symbol {symbol!r} has no known quote currency")


def _required(value: Decimal | None, name: str) -> float:
    if value is None:
        raise BrokerRejected(f"Alpaca needs {name} for this order.")
    return _wire_number(value, name)


def _wire_number(value: Decimal | None, name: str) -> float | None:
    """alpaca-py's request models take floats: refuse a Decimal that a float would change."""
    if value is None:
        return None
    number = float(value)
    if Decimal(repr(number)) != value:
        raise BrokerRejected(f"{name} {value} has more digits than Alpaca accepts.")
    return number


def _price_from_reply(reply: Any, symbol: str) -> Decimal:
    trades = _mapping(reply)
    if trades.get(symbol) is None:
        raise BrokerRejected(f"Alpaca has no recent trade for {symbol}.")
    trade = Trade(symbol, _mapping(trades[symbol]))
    return _decimal(trade.price)
