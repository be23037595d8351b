"""Upbit (Korea): crypto on the KRW market, live only, over plain `requests`.

Upbit has no paper environment (../shared/brokers/upbit.md §10); a paper crypto account is the
simulator's job. Wire facts used here are in upbit.md; the section is named where it matters.

Everything Upbit speaks stays in this module: its JSON, its `bid`/`ask`, `wait`/`done`, KST
stamps and error names are mapped by the tables below, and an unknown value raises instead of
being guessed. Out of it come only brokers.types dataclasses and brokers.errors errors.

Failures (brokers/base.py):
- nothing reached Upbit, or it refused before doing anything (429/418, market_offline) ->
  BrokerUnavailable;
- the request may have reached Upbit but its answer was lost (read timeout, reset, 5xx, a
  garbled body) -> BrokerUnavailable on reads, BrokerOutcomeUnknown on place_order, which this
  module never resends by itself: the service looks the order up by `identifier` and, when the
  lookup does not show it, sends the same order again under the same identifier;
- Upbit refused -> BrokerRejected / InsufficientFunds / OrderNotFound / CredentialsRefused by
  the error `name` (upbit.md §7), never by the (Korean) message.
Reads are retried a bounded number of times; writes (POST, DELETE) are sent exactly once per call.

Pacing (upbit.md section 8): the `order` group allows 12 requests/s (POST /v1/orders; the cancel,
DELETE /v1/order, is paced with it too, the stricter budget) and other private calls 30/s
(UPBIT_ORDER_REQUESTS_PER_SECOND, UPBIT_PRIVATE_REQUESTS_PER_SECOND), per access key, shared by
every worker through the cache (brokers/pacing.py). Every answer's `Remaining-Req: group=...;
sec=N` header is read: at sec=0 (and on a 429, "wait for the next second") that group's next
request waits a second. Quotation calls (ticker) are limited per IP, not per key, and not paced.

No double order (upbit.md, "Facts checked"): `identifier` is single-use across all of an
account's orders, even when the first request errored, so a second POST under one identifier is
refused (`duplicated_identifier`) and can never be a second order: a 201 to the re-send means the
first never arrived. `GET /v1/order?identifier=` has no documented consistency window, so its
`order_not_found` right after a lost reply proves nothing (find_order returns None, "not shown
now"); absence is settled only by time (brokers.base.UniqueClientIds). A duplicate refusal is
never a rejection: the order under the identifier is returned, or DuplicateClientId when Upbit
does not show it yet.

A row Upbit lists with an `ord_type`, `state`, `side` or `time_in_force` this module does not
know (an order placed elsewhere, or a type newer than upbit.md) is left out of lists, logged once
per value, never fatal to the other rows; reading one order by its id still refuses to guess.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote, urlencode

import jwt
import requests
from brokers.conf import conf

from brokers.base import UniqueClientIds
from brokers.http import never_sent
from brokers.pacing import Pacer, remaining_in_second
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

KST = timezone(timedelta(hours=9))

# Bounded retries for reads only (GET). Delays before the 2nd and 3rd attempt, in seconds:
# a 429 means "wait for the next second" (upbit.md §8), so the last pause crosses one.
READ_RETRY_DELAYS: Sequence[float] = (0.3, 1.0)

OPEN_PAGE_SIZE = 100  # GET /v1/orders/open: limit <= 100
OPEN_MAX_PAGES = 10
CLOSED_PAGE_SIZE = 1000  # GET /v1/orders/closed: limit <= 1000
CLOSED_WINDOW = timedelta(days=7)  # the closed list answers at most 7 days per call
CLOSED_MAX_WINDOWS = 13  # list_orders(since=...) reaches back at most ~91 days
CLOSED_MAX_CALLS = 40

_MARKET = re.compile(r"^[A-Z0-9]{2,10}-[A-Z0-9]{1,20}$")

_SIDE_TO_WIRE = {Side.BUY: "bid", Side.SELL: "ask"}
_SIDE_FROM_WIRE = {"bid": Side.BUY, "ask": Side.SELL}
# `price` = market buy by KRW amount, `market` = market sell by volume, `best` = best-price
# IOC/FOK (we never send it, but an order placed elsewhere may show it).
_ORDER_TYPE_FROM_WIRE = {"limit": OrderType.LIMIT, "price": OrderType.MARKET, "market": OrderType.MARKET,
                         "best": OrderType.MARKET}
_TIF_TO_WIRE = {TimeInForce.GTC: None, TimeInForce.IOC: "ioc", TimeInForce.FOK: "fok"}
_TIF_FROM_WIRE = {"ioc": TimeInForce.IOC, "fok": TimeInForce.FOK, "post_only": TimeInForce.GTC}
_OPEN_STATES = frozenset({"wait", "watch"})
_FINAL_STATES = frozenset({"done", "cancel"})

# Error `name`s (upbit.md §7) that do not mean "this request was refused on its merits".
# The IP allow-list refusal has two spellings in the wild (upbit.md "Facts checked"): both mean
# these keys cannot be used from this server's address.
_IP_NOT_ALLOWED_ERRORS = frozenset({"no_authorization_ip", "no_authorization_i_p"})
_CREDENTIAL_ERRORS = frozenset({"jwt_verification", "expired_access_key", "invalid_access_key",
                                "out_of_scope"}) | _IP_NOT_ALLOWED_ERRORS
_UNAVAILABLE_ERRORS = frozenset({"market_offline"})
# Our own signing went wrong: nothing was done, the keys are fine. Logged as errors.
_SIGNING_ERRORS = frozenset({"invalid_query_payload", "no_authorization_token", "nonce_used"})


# --- what one HTTP exchange can end in (internal; translated before leaving the adapter) -------

class _NoAnswer(Exception):
    """No usable answer.

    kind: "unreached" (provably never sent), "throttled" (429/418: refused unprocessed), or
    "lost" (it may have reached Upbit: read timeout, reset, 5xx, garbled body).
    """

    def __init__(self, why: str, *, kind: str, status: int | None = None):
        super().__init__(why)
        self.why, self.kind, self.status = why, kind, status


class _Refusal(Exception):
    """Upbit answered 4xx with its error envelope {"error": {"name", "message"}}."""

    def __init__(self, status: int, name: str | int, message: str):
        super().__init__(f"{status} {name}: {message}")
        self.status, self.name, self.message = status, name, message


class _Garbled(Exception):
    """A 2xx body that does not have the shape Upbit documents."""


class _Foreign(_Garbled):
    """A well-formed order with an `ord_type`, `state`, `side` or `time_in_force` we do not know.

    An order placed elsewhere (Upbit's app, another bot) or of a newer kind: a listing leaves it
    out (logged once per value); read by its own id it is as unreadable as any garbled answer.
    """

    def __init__(self, field_name: str, value: Any):
        super().__init__(f"unknown {field_name} {value!r}")
        self.field_name, self.value = field_name, value


_FOREIGN_LOGGED: set[tuple[str, str]] = set()  # (field, value) pairs already logged by this process


def _log_foreign_once(exc: _Foreign, *, connection_id: int) -> None:
    key = (exc.field_name, repr(exc.value))
    if key in _FOREIGN_LOGGED:
        return
    _FOREIGN_LOGGED.add(key)
    logger.warning("upbit order with %s %r left out of the listing (not an order type this service knows)",
                   exc.field_name, exc.value, extra={"exchange": "upbit", "connection_id": connection_id})


class UpbitAdapter(UniqueClientIds):
    """One user's Upbit account (KRW market). Satisfies brokers.base.BrokerAdapter.

    client_ids: Upbit's `identifier` is unique per account forever (upbit.md §3), so the service
    may re-send a lost order under it; absence_settled comes from UniqueClientIds.
    """

    exchange = "upbit"
    currency = "KRW"
    SUPPORTED = frozenset({(AssetClass.CRYPTO, Environment.LIVE)})
    CREDENTIAL_FIELDS = ("access_key", "secret_key")

    def __init__(self, *, credentials: dict, asset_class: AssetClass, live: bool, connection_id: int):
        environment = Environment.LIVE if live else Environment.PAPER
        if (AssetClass(asset_class), environment) not in self.SUPPORTED:
            raise BrokerNotConfigured("Upbit trades crypto with live keys only; it has no paper environment.")
        missing = [name for name in self.CREDENTIAL_FIELDS if not (credentials or {}).get(name)]
        if missing:
            raise CredentialsRefused(f"The Upbit connection lacks {', '.join(missing)}; reconnect it.")
        self._access_key = str(credentials["access_key"])
        self._secret_key = str(credentials["secret_key"])  # used as raw UTF-8 bytes, not base64 (§2)
        self.connection_id = connection_id
        self._base_url = conf.UPBIT_URL.rstrip("/")
        self._timeout = conf.BROKER_TIMEOUT_SECONDS
        self._session = requests.Session()
        self._session.headers.update({"Accept": "application/json"})  # and never an Origin header (§6)
        self._pacers = {
            "order": Pacer(broker="upbit", key=self._access_key, group="order",
                           rate=conf.UPBIT_ORDER_REQUESTS_PER_SECOND),
            "default": Pacer(broker="upbit", key=self._access_key, group="default",
                             rate=conf.UPBIT_PRIVATE_REQUESTS_PER_SECOND),
        }

    def __repr__(self) -> str:  # keys stay out of reprs, tracebacks and logs
        return f"<UpbitAdapter connection_id={self.connection_id}>"

    # --- BrokerAdapter ----------------------------------------------------------------------

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        body = self._order_body(order)  # refuses stop/day/... before any HTTP call
        try:
            reply = self._call("POST", "/v1/orders", body=body)
        except _NoAnswer as exc:
            if exc.kind == "lost":
                raise BrokerOutcomeUnknown(f"Upbit's answer to the order was lost ({exc.why}); "
                                           f"its outcome is unknown.") from exc
            raise BrokerUnavailable(f"Upbit did not take the order ({exc.why}); nothing was placed.") from exc
        except _Refusal as exc:
            if exc.name == "duplicated_identifier":
                return self._placed_under_identifier(order)
            raise _domain_error(exc) from exc
        try:
            return _order_from_wire(reply, requested_qty=order.qty)
        except _Garbled as exc:
            raise BrokerOutcomeUnknown(f"Upbit answered the order with an unreadable body ({exc}).") from exc

    def cancel_order(self, broker_order_id: str, *, symbol: str | None = None) -> None:
        order_uuid = _order_id(broker_order_id)
        try:
            self._call("DELETE", "/v1/order", query=[("uuid", order_uuid)])
            return None  # cancel accepted ("취소 접수"): the order shows `cancel` shortly after (§4)
        except _NoAnswer as exc:
            raise BrokerUnavailable(f"Upbit did not answer the cancel ({exc.why}).") from exc
        except _Refusal as exc:
            if exc.name in _CREDENTIAL_ERRORS | _UNAVAILABLE_ERRORS | _SIGNING_ERRORS:
                raise _domain_error(exc) from exc
            refusal = exc
        # What Upbit answers for cancelling a done/cancelled order is not documented (§4): whatever
        # 4xx it is (order_not_found included), the order's own state decides.
        current = self.get_order(order_uuid)  # OrderNotFound when it really does not exist
        if current.status.is_final:
            raise BrokerRejected(f"The order is already {current.status}; it cannot be canceled.")
        raise BrokerRejected(f"Upbit refused to cancel the order: {refusal.message} ({refusal.name}).")

    def get_order(self, broker_order_id: str, *, symbol: str | None = None) -> BrokerOrder:
        reply = self._read_json("GET", "/v1/order", [("uuid", _order_id(broker_order_id))])
        return _parse_or_unavailable(reply)

    def list_orders(self, *, scope: ListScope = ListScope.ALL, symbol: str | None = None,
                    since: datetime | None = None) -> list[BrokerOrder]:
        market = _market(symbol) if symbol else None
        rows: dict[str, dict] = {}
        if scope in (ListScope.OPEN, ListScope.ALL):
            rows.update((row.get("uuid"), row) for row in self._open_rows(market))
        if scope in (ListScope.CLOSED, ListScope.ALL):
            rows.update((row.get("uuid"), row) for row in self._closed_rows(market, since))
        orders = []
        for row in rows.values():
            try:
                orders.append(_order_from_wire(row))
            except _Foreign as exc:
                _log_foreign_once(exc, connection_id=self.connection_id)
            except _Garbled as exc:
                raise BrokerUnavailable(f"Upbit sent an order in an unexpected shape ({exc}).") from exc
        if since is not None:
            orders = [o for o in orders if o.submitted_at >= since]
        return sorted(orders, key=lambda o: o.submitted_at, reverse=True)

    def positions(self) -> list[Position]:
        holdings = _holdings(self._read_json("GET", "/v1/accounts"))
        prices = self._prices([h["market"] for h in holdings])
        return [_position(h, prices.get(h["market"])) for h in holdings]

    def account(self) -> Account:
        rows = self._read_json("GET", "/v1/accounts")
        holdings = _holdings(rows)
        prices = self._prices([h["market"] for h in holdings])
        krw = next((r for r in rows if isinstance(r, dict) and r.get("currency") == "KRW"), None)
        try:
            available = _dec(krw["balance"]) if krw else Decimal("0")
            locked = _dec(krw["locked"]) if krw else Decimal("0")
        except (KeyError, _Garbled) as exc:
            raise BrokerUnavailable("Upbit sent an unreadable KRW balance.") from exc
        cash = available + locked
        held = sum((h["qty"] * prices.get(h["market"], h["avg_buy_price"]) for h in holdings), Decimal("0"))
        return Account(equity=cash + held, buying_power=available, cash=cash, currency=self.currency,
                       as_of=datetime.now(UTC), last_equity=None,
                       metadata={"locked_krw": str(locked)})

    def find_order(self, order: OrderRequest, *, submitted_at: datetime) -> BrokerOrder | None:
        """GET /v1/order?identifier=: the order, or None when Upbit does not show one now.

        None is not proof of absence: Upbit documents no window within which a new order shows
        in this lookup (upbit.md "Facts checked").
        """
        try:
            reply = self._read("GET", "/v1/order", [("identifier", order.broker_client_id)])
        except _Refusal as exc:
            if exc.name == "order_not_found":
                return None  # not shown now; it may still appear
            raise BrokerUnavailable(f"Cannot tell whether Upbit placed the order ({exc.name}).") from exc
        except _NoAnswer as exc:
            raise BrokerUnavailable(f"Cannot tell whether Upbit placed the order ({exc.why}).") from exc
        try:
            return _order_from_wire(reply, requested_qty=order.qty)
        except _Garbled as exc:
            raise BrokerUnavailable(f"Cannot tell whether Upbit placed the order ({exc}).") from exc

    def latest_price(self, symbol: str) -> Decimal:
        market = _market(symbol)
        prices = self._prices([market])
        if market not in prices:
            raise BrokerRejected(f"Upbit has no market {market}.")
        return prices[market]

    # --- orders: our request -> Upbit's body -------------------------------------------------

    def _order_body(self, order: OrderRequest) -> dict[str, str]:
        if order.order_type not in (OrderType.MARKET, OrderType.LIMIT) or order.stop_price is not None:
            raise BrokerRejected("Upbit has no stop or stop-limit orders; send a market or limit order.")
        if order.bracket is not None:
            raise BrokerRejected("Upbit has no bracket orders: its take-profit/stop-loss legs would need "
                                 "stop orders, which Upbit does not have.")
        if order.time_in_force not in _TIF_TO_WIRE:
            raise BrokerRejected(f"Upbit has no {order.time_in_force} orders for crypto; time_in_force must be "
                                 f"gtc (a resting limit), ioc or fok.")
        market = _market(order.symbol)
        if not market.startswith("KRW-"):
            raise BrokerRejected(f"This Upbit connection trades the KRW market only (KRW-<COIN>), not {market}.")
        if order.qty <= 0:
            raise BrokerRejected("The quantity must be positive.")
        side = _SIDE_TO_WIRE[order.side]
        if order.order_type == OrderType.LIMIT:
            if order.limit_price is None or order.limit_price <= 0:
                raise BrokerRejected("A limit order needs a positive limit_price.")
            # The tick grid (§9) is Upbit's to enforce: our copy of the table has exceptions
            # (USDT/KRW...) and changes by notice, so a wrong local check would refuse good
            # orders. Upbit's invalid_price_* comes back as BrokerRejected with its message.
            body = {"market": market, "side": side, "volume": _wire_number(order.qty),
                    "price": _wire_number(order.limit_price), "ord_type": "limit"}
            if _TIF_TO_WIRE[order.time_in_force]:
                body["time_in_force"] = _TIF_TO_WIRE[order.time_in_force]
        elif order.limit_price is not None:
            raise BrokerRejected("A market order takes no limit_price.")
        elif order.time_in_force == TimeInForce.FOK:
            raise BrokerRejected("Upbit market orders cannot be fill-or-kill; use gtc or ioc, "
                                 "or a limit order with fok.")
        elif order.side == Side.BUY:
            # Upbit buys at market by KRW amount (ord_type `price`), not by quantity. We spend
            # qty x the last trade price, rounded DOWN to whole won: never more KRW than the order
            # was judged on (risk, funds), at most 1 KRW less. The coins received differ from qty
            # as the price moves; what was bought shows as filled_qty.
            amount = (order.qty * self.latest_price(market)).quantize(Decimal("1"), rounding=ROUND_DOWN)
            if amount <= 0:
                raise BrokerRejected("The order is worth less than 1 KRW at the last price.")
            body = {"market": market, "side": side, "price": _wire_number(amount), "ord_type": "price"}
        else:
            body = {"market": market, "side": side, "volume": _wire_number(order.qty), "ord_type": "market"}
        # A market order on Upbit is immediate by nature (its unfilled rest is canceled), so gtc
        # and ioc both mean the same there and send no time_in_force.
        body["identifier"] = order.broker_client_id
        return body

    def _placed_under_identifier(self, order: OrderRequest) -> BrokerOrder:
        """duplicated_identifier: an earlier send under our identifier arrived (or was consumed).

        Return the order under it; when Upbit does not show it (yet), DuplicateClientId. Never
        BrokerRejected: a rejection lets the client retry under a new identifier, a second order.
        """
        try:
            found = self.find_order(order, submitted_at=datetime.now(UTC))
        except BrokerUnavailable as exc:
            raise DuplicateClientId("Upbit says this order's identifier is taken and the order could not "
                                    "be read back.") from exc
        if found is None:
            raise DuplicateClientId("Upbit says this order's identifier is taken (duplicated_identifier) but "
                                    "does not show the order under it yet.")
        return found

    # --- listings ----------------------------------------------------------------------------

    def _open_rows(self, market: str | None) -> list[dict]:
        # `state=wait` only. `watch` holds reserved (stop) orders, which this adapter never places;
        # and asking for both needs `states[]`, whose brackets requests/urllib3 always send
        # percent-encoded while Upbit hashes them literal (§2: unconfirmed that it accepts that).
        rows: list[dict] = []
        for page in range(1, OPEN_MAX_PAGES + 1):
            query = [("market", market)] if market else []
            query += [("state", "wait"), ("page", str(page)), ("limit", str(OPEN_PAGE_SIZE)), ("order_by", "desc")]
            batch = _list_of_dicts(self._read_json("GET", "/v1/orders/open", query))
            rows += batch
            if len(batch) < OPEN_PAGE_SIZE:
                return rows
        logger.warning("upbit open orders: more than %d pages; the rest is not listed", OPEN_MAX_PAGES,
                       extra={"exchange": self.exchange, "connection_id": self.connection_id})
        return rows

    def _closed_rows(self, market: str | None, since: datetime | None) -> list[dict]:
        """Closed orders from `since` (default: the last 7 days) to now, 7 days per call."""
        now = datetime.now(UTC)
        oldest = now - CLOSED_WINDOW * CLOSED_MAX_WINDOWS
        start_bound = (since.astimezone(UTC) if since else now - CLOSED_WINDOW)
        if start_bound < oldest:
            logger.warning("upbit closed orders: since %s is beyond %d days; listing from %s",
                           start_bound.isoformat(), CLOSED_WINDOW.days * CLOSED_MAX_WINDOWS, oldest.isoformat(),
                           extra={"exchange": self.exchange, "connection_id": self.connection_id})
            start_bound = oldest
        rows: list[dict] = []
        calls = 0
        window_end = now
        while window_end > start_bound and calls < CLOSED_MAX_CALLS:
            window_start = max(start_bound, window_end - CLOSED_WINDOW)
            end = window_end
            while calls < CLOSED_MAX_CALLS:
                query = [("market", market)] if market else []
                query += [("start_time", _epoch_ms(window_start)), ("end_time", _epoch_ms(end)),
                          ("limit", str(CLOSED_PAGE_SIZE)), ("order_by", "desc")]
                batch = _list_of_dicts(self._read_json("GET", "/v1/orders/closed", query))
                calls += 1
                rows += batch
                if len(batch) < CLOSED_PAGE_SIZE:
                    break
                # A full page: orders beyond `limit` are simply not returned (§4). Page back in time
                # from the oldest one seen; duplicates at the edge are merged by uuid.
                oldest_seen = min(_created_at(row) for row in batch)
                if oldest_seen >= end:
                    break  # no progress possible (a thousand orders in one millisecond)
                end = oldest_seen
            window_end = window_start
        return rows

    # --- prices and balances -----------------------------------------------------------------

    def _prices(self, markets: Iterable[str]) -> dict[str, Decimal]:
        """Last trade price per market; a market Upbit does not know is left out."""
        markets = list(dict.fromkeys(markets))
        if not markets:
            return {}
        try:
            rows = self._read("GET", "/v1/ticker", [("markets", ",".join(markets))], private=False)
        except _Refusal as exc:
            if exc.status == 404 and len(markets) > 1:
                # One unknown market (a delisted coin) fails the whole list: ask one by one.
                return {m: p for market in markets for m, p in self._prices([market]).items()}
            if exc.status == 404:
                return {}
            raise _domain_error(exc) from exc
        except _NoAnswer as exc:
            raise BrokerUnavailable(f"Upbit did not answer the price request ({exc.why}).") from exc
        try:
            return {row["market"]: _dec(row["trade_price"]) for row in _list_of_dicts(rows)}
        except (KeyError, _Garbled) as exc:
            raise BrokerUnavailable("Upbit sent an unreadable ticker.") from exc

    # --- HTTP ----------------------------------------------------------------------------------

    def _read_json(self, method: str, path: str, query: Sequence[tuple[str, str]] = (), *,
                   private: bool = True) -> Any:
        try:
            return self._read(method, path, query, private=private)
        except _NoAnswer as exc:
            raise BrokerUnavailable(f"Upbit did not answer {method} {path} ({exc.why}).") from exc
        except _Refusal as exc:
            raise _domain_error(exc) from exc

    def _read(self, method: str, path: str, query: Sequence[tuple[str, str]] = (), *,
              private: bool = True) -> Any:
        """A read, retried on transient failures: at most 1 + len(READ_RETRY_DELAYS) attempts."""
        attempts = 1 + len(READ_RETRY_DELAYS)
        for attempt in range(1, attempts + 1):
            try:
                return self._call(method, path, query=query, private=private, attempt=attempt)
            except _NoAnswer as exc:
                # 418: blocked for a while after repeated 429s; calling again prolongs the block.
                if attempt == attempts or exc.status == 418:
                    raise
            except _Refusal as exc:
                if attempt == attempts or exc.name != "nonce_used":  # a new token gets a new nonce
                    raise
            time.sleep(READ_RETRY_DELAYS[attempt - 1])
        raise AssertionError("unreachable")

    def _call(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (),
              body: dict[str, str] | None = None, private: bool = True, attempt: int = 1) -> Any:
        """One HTTP exchange. Returns the parsed 2xx JSON, or raises _NoAnswer / _Refusal."""
        url = self._base_url + path
        headers: dict[str, str] = {}
        data = None
        if query:
            # Hashed unencoded, sent encoded (§2). The values we send (uuids, hex ids, market
            # codes, digits, commas) read the same both ways; no array params (see _open_rows).
            url += "?" + urlencode(list(query), safe=",")
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json; charset=utf-8"
        if private:
            signed = list(body.items()) if body is not None else list(query)
            headers["Authorization"] = "Bearer " + self._token(unquote(urlencode(signed)) if signed else None)

        pacer = None
        if private:
            group = "order" if path in ("/v1/orders", "/v1/order") and method in ("POST", "DELETE") else "default"
            pacer = self._pacers[group]
            # Waits for this key's turn; refuses (nothing sent) when none comes in time.
            pacer.wait_turn(critical=(method == "POST" and path == "/v1/orders"))

        started = time.monotonic()
        status: int | None = None
        outcome = "?"
        remaining = None
        try:
            try:
                # No redirects: a 3xx is an answer (it reached Upbit), and never_sent judges one request.
                reply = self._session.request(method, url, data=data, headers=headers, timeout=self._timeout,
                                              allow_redirects=False)
            except requests.RequestException as exc:
                kind = "unreached" if never_sent(exc) else "lost"
                outcome = f"{type(exc).__name__} ({kind})"
                raise _NoAnswer(_describe(exc), kind=kind) from exc
            status = reply.status_code
            remaining = reply.headers.get("Remaining-Req")
            self._honour_remaining(remaining, pacer, throttled=status in (418, 429))
            if status in (418, 429):
                outcome = f"{status} throttled"
                raise _NoAnswer(f"HTTP {status}, rate limited", kind="throttled", status=status)
            if status >= 500:
                outcome = f"{status} server error"
                raise _NoAnswer(f"HTTP {status}", kind="lost", status=status)
            try:
                payload = json.loads(reply.content.decode("utf-8"), parse_float=Decimal)
            except (UnicodeDecodeError, ValueError) as exc:
                outcome = f"{status} unreadable body"
                raise _NoAnswer(f"HTTP {status} with a body that is not JSON", kind="lost", status=status) from exc
            if 200 <= status < 300:
                outcome = f"{status} ok"
                return payload
            error = payload.get("error") if isinstance(payload, dict) else None
            if status >= 400 and isinstance(error, dict) and error.get("name") is not None:
                name = error["name"]
                outcome = f"{status} {name}"
                raise _Refusal(status, name, str(error.get("message") or ""))
            outcome = f"{status} unexpected"
            raise _NoAnswer(f"HTTP {status} without Upbit's error envelope", kind="lost", status=status)
        finally:
            latency_ms = round((time.monotonic() - started) * 1000)
            level = logging.INFO if outcome.endswith(" ok") else logging.WARNING
            if any(name in outcome for name in _SIGNING_ERRORS):
                level = logging.ERROR  # our bug, not the user's keys
            logger.log(level, "upbit %s %s -> %s in %d ms", method, path, outcome, latency_ms,
                       extra={"exchange": self.exchange, "connection_id": self.connection_id,
                              "http_method": method, "http_path": path, "http_status": status,
                              "outcome": outcome, "latency_ms": latency_ms, "attempt": attempt,
                              "remaining_req": remaining})

    def _honour_remaining(self, header: str | None, pacer: Pacer | None, *, throttled: bool) -> None:
        """Upbit said how many requests are left this second: none left -> that group waits a second."""
        group, left = remaining_in_second(header)
        target = self._pacers.get(group or "") or pacer
        if target is not None and (throttled or (left is not None and left <= 0)):
            target.hold(1.0)

    def _token(self, query_string: str | None) -> str:
        """A fresh JWT for one request (§2): a new nonce, query_hash (SHA-512) of what is sent.

        Signed HS256, as Upbit's own per-endpoint samples do (upbit.md §2, "Facts checked"; HS512
        is accepted too, but newer PyJWT warns on HS512 with a key as short as Upbit's).
        """
        payload = {"access_key": self._access_key, "nonce": str(uuid.uuid4())}
        if query_string:
            payload["query_hash"] = hashlib.sha512(query_string.encode("utf-8")).hexdigest()
            payload["query_hash_alg"] = "SHA512"
        return jwt.encode(payload, self._secret_key, algorithm="HS256")


# --- Upbit's answers -> our types -------------------------------------------------------------

def _domain_error(refusal: _Refusal) -> DomainError:
    name, text = refusal.name, f"{refusal.message} ({refusal.name})" if refusal.message else str(refusal.name)
    if isinstance(name, int):  # quotation APIs use the HTTP status as the name (§6)
        return BrokerRejected(f"Upbit refused the request: {text}.")
    if name.startswith("insufficient_funds"):
        return InsufficientFunds(f"Upbit: not enough funds for this order: {text}.")
    if name in _CREDENTIAL_ERRORS:
        return CredentialsRefused(f"Upbit refused this connection's API key: {text}. "
                                  f"Check the key, its IP allow-list and its permissions, then reconnect.")
    if name in _UNAVAILABLE_ERRORS:
        return BrokerUnavailable(f"Upbit is not trading this market right now: {text}.")
    if name in _SIGNING_ERRORS:
        return BrokerUnavailable(f"Upbit refused the request's signature: {text}. Nothing was done.")
    if name == "order_not_found":
        return OrderNotFound()
    return BrokerRejected(f"Upbit refused the request: {text}.")


def _parse_or_unavailable(row: Any) -> BrokerOrder:
    try:
        return _order_from_wire(row)
    except _Garbled as exc:
        raise BrokerUnavailable(f"Upbit sent an order in an unexpected shape ({exc}).") from exc


def _order_from_wire(row: Any, *, requested_qty: Decimal | None = None) -> BrokerOrder:
    """One Upbit order object (create/get/cancel/open/closed share the shape, §3)."""
    if not isinstance(row, dict):
        raise _Garbled("an order is not a JSON object")
    try:
        ord_type, state, wire_side = row["ord_type"], row["state"], row["side"]
        if ord_type not in _ORDER_TYPE_FROM_WIRE:
            raise _Foreign("ord_type", ord_type)
        if wire_side not in _SIDE_FROM_WIRE:
            raise _Foreign("side", wire_side)
        if state not in _OPEN_STATES | _FINAL_STATES:
            raise _Foreign("state", state)
        wire_tif = row.get("time_in_force")
        if wire_tif is not None and wire_tif not in _TIF_FROM_WIRE:
            raise _Foreign("time_in_force", wire_tif)
        executed = _dec(row.get("executed_volume") or "0")
        volume = _dec(row["volume"]) if row.get("volume") is not None else None
        by_amount = ord_type == "price" or (ord_type == "best" and wire_side == "bid")
        trades = row.get("trades") or []
        spent_in_full = _amount_spent(row, trades) if by_amount else False
        status = _status(state, executed=executed, volume=volume, spent_in_full=spent_in_full)
        if by_amount:
            # A market buy has a KRW amount, no quantity: once over, its size is what it bought;
            # while open, the quantity it was placed for (when we know it).
            qty = executed if (state in _FINAL_STATES or requested_qty is None) else requested_qty
        elif volume is not None:
            qty = volume
        else:
            raise _Garbled("an order by quantity without a volume")
        submitted_at = _utc(row["created_at"])
        updated_at = max([submitted_at] + [_utc(t["created_at"]) for t in trades])
        if ord_type == "limit":
            tif = _TIF_FROM_WIRE[wire_tif] if wire_tif else TimeInForce.GTC
        else:
            tif = _TIF_FROM_WIRE[wire_tif] if wire_tif else None
        return BrokerOrder(
            broker_order_id=str(row["uuid"]),
            broker_client_id=row.get("identifier"),
            symbol=str(row["market"]),
            side=_SIDE_FROM_WIRE[wire_side],
            qty=qty,
            filled_qty=executed,
            avg_fill_price=_avg_fill_price(row, trades, executed),
            order_type=_ORDER_TYPE_FROM_WIRE[ord_type],
            status=status,
            submitted_at=submitted_at,
            updated_at=updated_at,
            limit_price=_dec(row["price"]) if ord_type == "limit" else None,
            time_in_force=tif,
        )
    except (KeyError, TypeError) as exc:
        raise _Garbled(f"an order without {exc}") from exc


def _status(state: str, *, executed: Decimal, volume: Decimal | None, spent_in_full: bool) -> OrderStatus:
    if state in _OPEN_STATES:
        return OrderStatus.PARTIALLY_FILLED if executed > 0 else OrderStatus.ACCEPTED
    if state == "done":
        return OrderStatus.FILLED
    if state == "cancel":
        # `cancel` is also how a market buy ends when its amount was not spent to the last won:
        # the leftover KRW is released (§3). That is a complete market buy -> filled. A market
        # buy that stopped with much of its amount unspent (the book ran out, self-match
        # prevention) is canceled after a partial fill, reported with what it executed.
        if executed > 0 and (spent_in_full or (volume is not None and executed >= volume)):
            return OrderStatus.FILLED
        # Anything else canceled is canceled, with whatever it filled first in filled_qty
        # (an IOC/FOK remainder, a limit canceled after partial fills).
        return OrderStatus.CANCELED
    raise _Foreign("state", state)


# A market buy's unspent KRW up to this share of its amount is rounding (the volume's decimals,
# the last won), not an unfilled rest.
SPENT_IN_FULL_TOLERANCE = Decimal("0.001")
_VOLUME_STEP = Decimal("0.00000001")  # Upbit's finest volume unit (8 decimals)


def _amount_spent(row: dict, trades: list) -> bool:
    """Did a market buy by amount (`price`, `best` bid) spend its amount, all but rounding?

    Unspent = amount (`price`) - funds executed (trades[].funds, or executed_funds in lists). It
    is rounding when it would not buy one more volume unit at the last price, or is within
    SPENT_IN_FULL_TOLERANCE of the amount. Without the funds (a create reply) we cannot tell:
    taken as spent, as before; the next read of the order, which carries them, corrects it.
    """
    try:
        amount = _dec(row["price"])
        if trades:
            funds = sum((_dec(t["funds"]) for t in trades), Decimal("0"))
            last_price = _dec(trades[-1]["price"])
        elif row.get("executed_funds") is not None:
            funds = _dec(row["executed_funds"])
            executed = _dec(row.get("executed_volume") or "0")
            last_price = funds / executed if executed > 0 else Decimal("0")
        else:
            return True
    except KeyError:
        return True
    unspent = amount - funds
    return unspent <= amount * SPENT_IN_FULL_TOLERANCE or unspent < last_price * _VOLUME_STEP


def _avg_fill_price(row: dict, trades: list, executed: Decimal) -> Decimal | None:
    if executed <= 0:
        return None
    if trades:  # only GET /v1/order has trades; avg_price is not a documented field (§3)
        funds = sum((_dec(t["funds"]) for t in trades), Decimal("0"))
        volume = sum((_dec(t["volume"]) for t in trades), Decimal("0"))
        return funds / volume if volume > 0 else None
    if row.get("executed_funds") is not None:  # the open/closed lists carry executed_funds
        return _dec(row["executed_funds"]) / executed
    return None


def _holdings(rows: Any) -> list[dict]:
    """Coin rows of GET /v1/accounts, dust and zero rows dropped (§5)."""
    holdings = []
    try:
        for row in _list_of_dicts(rows):
            if row["currency"] == "KRW":
                continue
            qty = _dec(row["balance"]) + _dec(row["locked"])
            if qty <= 0:
                continue
            holdings.append({"market": f"{row.get('unit_currency') or 'KRW'}-{row['currency']}", "qty": qty,
                             "avg_buy_price": _dec(row.get("avg_buy_price") or "0")})
    except (KeyError, _Garbled) as exc:
        raise BrokerUnavailable("Upbit sent an unreadable balance list.") from exc
    return holdings


def _position(holding: dict, price: Decimal | None) -> Position:
    avg, qty = holding["avg_buy_price"], holding["qty"]
    metadata = {}
    if price is None:  # no ticker for it (delisted, or no KRW market): value it at cost
        price = avg
        metadata["price_source"] = "avg_buy_price"
    pnl = (price - avg) * qty
    return Position(symbol=holding["market"], qty=qty, avg_entry_price=avg, current_price=price,
                    unrealized_pnl=pnl, unrealized_pnl_pct=(price - avg) / avg if avg > 0 else Decimal("0"),
                    currency="KRW", metadata=metadata)


# --- small helpers ----------------------------------------------------------------------------

def _market(symbol: str) -> str:
    market = (symbol or "").strip().upper()
    if not _MARKET.match(market):
        raise BrokerRejected(f"{symbol!r} is not an Upbit market code such as KRW-BTC.")
    return market


def _order_id(broker_order_id: str) -> str:
    value = (broker_order_id or "").strip()
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", value):
        raise OrderNotFound()
    return value


def _dec(value: Any) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise _Garbled(f"{value!r} is not a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise _Garbled(f"{value!r} is not a number") from exc
    if not number.is_finite():
        raise _Garbled(f"{value!r} is not a number")
    return number


def _utc(stamp: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(str(stamp))
    except ValueError as exc:
        raise _Garbled(f"{stamp!r} is not a time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=KST)  # Upbit's exchange stamps are KST (§1)
    return moment.astimezone(UTC)


def _created_at(row: dict) -> datetime:
    try:
        return _utc(row["created_at"])
    except KeyError as exc:
        raise BrokerUnavailable("Upbit sent an order without created_at.") from exc
    except _Garbled as exc:
        raise BrokerUnavailable(f"Upbit sent an unreadable order time ({exc}).") from exc


def _list_of_dicts(payload: Any) -> list[dict]:
    if not isinstance(payload, list) or not all(isinstance(row, dict) for row in payload):
        raise BrokerUnavailable("Upbit sent a list in an unexpected shape.")
    return payload


def _wire_number(value: Decimal) -> str:
    """Decimal -> Upbit's number string, plain notation: 0.001, 100000000."""
    return format(value.normalize(), "f")


def _epoch_ms(moment: datetime) -> str:
    # Milliseconds rather than ISO 8601, whose "+" and ":" would need URL-encoding (§4 allows both).
    return str(int(moment.timestamp() * 1000))


def _describe(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read timeout"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection refused" if never_sent(exc) else "connection lost"
    return type(exc).__name__
