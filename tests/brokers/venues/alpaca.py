"""Alpaca venue: the real AlpacaAdapter against a stateful fake of Alpaca's REST wire.

The fake is a `responses.RequestsMock` with callbacks. Its JSON is built from the recorded shapes
in tests/wire/alpaca/ (orders, positions, account, errors). It checks the auth headers on every
call (wrong keys -> Alpaca's 401), fills market and marketable orders at once at the symbol's
price, rests the others as `new`, cancels open orders and refuses final ones (422 42210000),
refuses a repeated client_order_id (422), crypto `day` orders (422) and buys beyond buying power
/ sells beyond the held qty (403 40310000), and keeps positions and cash.

Brackets as Alpaca has them: the order reply nests its `legs` (take-profit limit, stop-loss stop or
stop_limit), `held` until the entry fills, then `new`; each leg is read and canceled by its own id;
cancelling an unfilled entry cancels its held legs; when one leg fills the other is canceled (OCO).
`set_price()` moves a symbol's price and fills what it reaches, as the market would.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import responses
from django.conf import settings
from django.test import override_settings

from brokers.adapters.alpaca import AlpacaAdapter
from brokers.types import AssetClass, TimeInForce

PAPER_URL = "https://paper-api.alpaca.test"
LIVE_URL = "https://api.alpaca.test"
DATA_URL = "https://data.alpaca.test"
API_KEY = "PKTESTKEYID0000000001"
SECRET_KEY = "test-secret-key-never-logged-0000000000"
WIRE = Path(__file__).resolve().parents[2] / "wire" / "alpaca"

OPEN = {"new", "accepted", "pending_new", "partially_filled", "held", "pending_cancel", "pending_replace",
        "accepted_for_bidding", "calculated", "done_for_day", "stopped", "suspended"}
CLOSED = {"filled", "canceled", "expired", "rejected", "replaced"}


def wire(name: str) -> dict:
    """A recorded Alpaca reply from tests/wire/alpaca/."""
    return json.loads((WIRE / name).read_text())


def stamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def num(value: Decimal) -> str:
    """Alpaca writes numbers as plain decimal strings: "2", "0.01", "189.5"."""
    return format(value.normalize(), "f")


def reply(status: int, body=None, headers: dict | None = None):
    return status, headers or {}, "" if body is None else json.dumps(body)


class FakeAlpaca:
    """One Alpaca account: orders, positions and cash, behind the REST paths alpaca-py calls."""

    def __init__(self, *, prices: dict[str, Decimal], cash: Decimal = Decimal("100000"),
                 api_key: str = API_KEY, secret_key: str = SECRET_KEY):
        self.prices = dict(prices)
        self.cash = cash
        self.start_equity = cash
        self.api_key = api_key
        self.secret_key = secret_key
        self.orders: dict[str, dict] = {}  # id -> wire order, in submission order
        self.legs: dict[str, dict] = {}  # id -> bracket leg (the same dict as in its parent's "legs")
        self.parent_of: dict[str, str] = {}  # leg id -> parent id
        self.not_cancelable: set[str] = set()  # ids whose cancel Alpaca refuses (422), as for a final order
        self.held: dict[str, tuple[Decimal, Decimal]] = {}  # order-form symbol -> (qty, cost)
        self.order_posts: list[dict] = []  # every JSON body POSTed to /v2/orders

    # --- wiring ----------------------------------------------------------------------------------

    def install(self, mock: responses.RequestsMock, *, base_url: str = PAPER_URL, data_url: str = DATA_URL) -> None:
        def route(method, url, handler):
            mock.add_callback(method, url, callback=self._authenticated(handler), content_type="application/json")

        route(responses.POST, f"{base_url}/v2/orders", self._submit)
        route(responses.GET, f"{base_url}/v2/orders", self._list)
        route(responses.GET, f"{base_url}/v2/orders:by_client_order_id", self._by_client_id)
        route(responses.GET, re.compile(re.escape(base_url) + r"/v2/orders/[^/?]+(\?.*)?$"), self._get)
        route(responses.DELETE, re.compile(re.escape(base_url) + r"/v2/orders/[^/?]+(\?.*)?$"), self._cancel)
        route(responses.GET, f"{base_url}/v2/positions", self._positions)
        route(responses.GET, f"{base_url}/v2/account", self._account)
        route(responses.GET, f"{data_url}/v2/stocks/trades/latest", self._latest_trade)
        route(responses.GET, f"{data_url}/v1beta3/crypto/us/latest/trades", self._latest_trade)

    def _authenticated(self, handler):
        def callback(request):
            if (request.headers.get("APCA-API-KEY-ID") != self.api_key
                    or request.headers.get("APCA-API-SECRET-KEY") != self.secret_key):
                return reply(401, wire("error_401.json"))
            return handler(request)
        return callback

    # --- orders ----------------------------------------------------------------------------------

    def _submit(self, request):
        body = json.loads(request.body)
        self.order_posts.append(body)
        symbol = body["symbol"]
        crypto = "/" in symbol
        if symbol not in self.prices:
            return reply(422, {"code": 40010001, "message": f'asset "{symbol}" not found'})
        client_id = body.get("client_order_id") or uuid.uuid4().hex
        if any(o["client_order_id"] == client_id for o in self.orders.values()):
            return reply(422, wire("error_422_duplicate_client_id.json"))
        if crypto and body["time_in_force"] not in ("gtc", "ioc"):
            return reply(422, wire("error_422_invalid_crypto_tif.json"))
        if crypto and body["type"] == "stop":
            return reply(422, {"code": 42210000, "message": "stop orders are not supported for crypto"})
        qty = Decimal(str(body["qty"]))
        price = self.prices[symbol]
        limit = Decimal(str(body["limit_price"])) if body.get("limit_price") is not None else None
        stop = Decimal(str(body["stop_price"])) if body.get("stop_price") is not None else None
        if body["side"] == "buy" and qty * (limit or price) > self._buying_power():
            return reply(403, wire("error_403_insufficient_buying_power.json"))
        held = self.held.get(symbol, (Decimal(0), Decimal(0)))[0]
        if body["side"] == "sell" and qty > held:
            return reply(403, {**wire("error_403_insufficient_qty.json"), "symbol": symbol.replace("/", ""),
                               "message": f"insufficient qty available for order (requested: {num(qty)}, "
                                          f"available: {num(held)})", "available": num(held)})
        now = stamp()
        order = wire("order_crypto_filled.json" if crypto else "order.json")
        order.update({
            "id": str(uuid.uuid4()), "client_order_id": client_id, "created_at": now, "updated_at": now,
            "submitted_at": now, "filled_at": None, "symbol": symbol,
            "asset_class": "crypto" if crypto else "us_equity",
            "qty": num(qty), "filled_qty": "0", "filled_avg_price": None, "type": body["type"],
            "order_type": body["type"], "side": body["side"], "time_in_force": body["time_in_force"],
            "limit_price": num(limit) if limit is not None else None,
            "stop_price": num(stop) if stop is not None else None, "status": "new",
            "order_class": body.get("order_class", ""),
            "position_intent": "buy_to_open" if body["side"] == "buy" else "sell_to_close",
        })
        if body.get("order_class") == "bracket":
            order["legs"] = [self._leg(order, "limit", limit_price=body["take_profit"]["limit_price"]),
                             self._leg(order, "stop_limit" if "limit_price" in body["stop_loss"] else "stop",
                                       stop_price=body["stop_loss"]["stop_price"],
                                       limit_price=body["stop_loss"].get("limit_price"))]
        for leg in order.get("legs") or []:
            self.legs[leg["id"]] = leg
            self.parent_of[leg["id"]] = order["id"]
        if self._marketable(body["type"], body["side"], price, limit, stop):
            self._fill(order, price)
        self.orders[order["id"]] = order
        return reply(200, order)

    def set_price(self, symbol: str, price) -> None:
        """A new last trade: open orders it reaches fill (a resting limit at its limit), oldest first;
        a filled entry's legs go from held to new; a filled leg cancels the other (OCO)."""
        price = Decimal(str(price))
        self.prices[symbol] = price
        for order in [o for o in self.orders.values() if o["symbol"] == symbol]:
            if order["status"] in OPEN and self._reached(order, price):
                self._fill(order, self._fill_price(order, price))
            for leg in order.get("legs") or []:
                if leg["status"] == "new" and self._reached(leg, price):
                    self._fill(leg, self._fill_price(leg, price))

    def _reached(self, order: dict, price: Decimal) -> bool:
        limit = Decimal(order["limit_price"]) if order.get("limit_price") is not None else None
        stop = Decimal(order["stop_price"]) if order.get("stop_price") is not None else None
        return self._marketable(order["type"], order["side"], price, limit, stop)

    @staticmethod
    def _fill_price(order: dict, price: Decimal) -> Decimal:
        return Decimal(order["limit_price"]) if order["type"] == "limit" else price

    def _leg(self, parent: dict, kind: str, *, limit_price=None, stop_price=None) -> dict:
        leg = dict(parent, id=str(uuid.uuid4()), client_order_id=uuid.uuid4().hex, type=kind, order_type=kind,
                   side="sell" if parent["side"] == "buy" else "buy", status="held", legs=None, order_class="bracket",
                   time_in_force="gtc",
                   limit_price=num(Decimal(str(limit_price))) if limit_price is not None else None,
                   stop_price=num(Decimal(str(stop_price))) if stop_price is not None else None)
        return leg

    @staticmethod
    def _marketable(kind: str, side: str, price: Decimal, limit: Decimal | None, stop: Decimal | None) -> bool:
        buy = side == "buy"
        triggered = stop is None or (price >= stop if buy else price <= stop)
        crosses = limit is None or (limit >= price if buy else limit <= price)
        return triggered and crosses if kind != "market" else True

    def _fill(self, order: dict, price: Decimal) -> None:
        qty = Decimal(order["qty"])
        symbol = order["symbol"]
        held_qty, cost = self.held.get(symbol, (Decimal(0), Decimal(0)))
        if order["side"] == "buy":
            self.cash -= qty * price
            held_qty, cost = held_qty + qty, cost + qty * price
        else:
            self.cash += qty * price
            cost = cost - cost * qty / held_qty
            held_qty = held_qty - qty
        self.held[symbol] = (held_qty, cost)
        now = stamp()
        order.update(status="filled", filled_qty=num(qty), filled_avg_price=num(price), filled_at=now, updated_at=now)
        for leg in order.get("legs") or []:  # the entry filled: its legs go live
            if leg["status"] == "held":
                leg.update(status="new", updated_at=now)
        parent = self.orders.get(self.parent_of.get(order["id"], ""))
        for other in (parent or {}).get("legs") or []:  # one cancels other
            if other["id"] != order["id"] and other["status"] in OPEN:
                other.update(status="canceled", canceled_at=now, updated_at=now)

    def _order_id(self, request) -> str:
        return urlsplit(request.url).path.rsplit("/", 1)[-1]

    def _get(self, request):
        order_id = self._order_id(request)
        order = self.orders.get(order_id) or self.legs.get(order_id)
        return reply(200, order) if order else reply(404, wire("error_404_order.json"))

    def _by_client_id(self, request):
        client_id = parse_qs(urlsplit(request.url).query).get("client_order_id", [""])[0]
        for order in self.orders.values():
            if order["client_order_id"] == client_id:
                return reply(200, order)
        return reply(404, {"code": 40410000, "message": f"order not found for {client_id}"})

    def _cancel(self, request):
        order_id = self._order_id(request)
        order = self.orders.get(order_id) or self.legs.get(order_id)
        if order is None:
            return reply(404, wire("error_404_order.json"))
        if order["status"] not in OPEN or order_id in self.not_cancelable:
            return reply(422, wire("error_422_not_cancelable.json"))
        now = stamp()
        order.update(status="canceled", canceled_at=now, updated_at=now)
        for leg in order.get("legs") or []:  # an entry canceled before it filled takes its held legs along
            if leg["status"] == "held":
                leg.update(status="canceled", canceled_at=now, updated_at=now)
        return reply(204)

    def _list(self, request):
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        wanted = {"open": OPEN, "closed": CLOSED, "all": OPEN | CLOSED}[query.get("status", "open")]
        after = datetime.fromisoformat(query["after"].replace("Z", "+00:00")) if "after" in query else None
        symbols = set(query["symbols"].split(",")) if "symbols" in query else None
        found = [o for o in self.orders.values() if o["status"] in wanted
                 and (symbols is None or o["symbol"] in symbols)
                 and (after is None or datetime.fromisoformat(o["submitted_at"].replace("Z", "+00:00")) > after)]
        if query.get("direction", "desc") == "desc":
            found.reverse()
        return reply(200, found[: int(query.get("limit", 50))])

    # --- positions, account, market data ---------------------------------------------------------

    def _positions(self, request):
        items = []
        for symbol, (qty, cost) in self.held.items():
            if qty == 0:
                continue
            crypto = "/" in symbol
            price = self.prices[symbol]
            value = qty * price
            position = wire("position_crypto.json" if crypto else "position_us_equity.json")
            position.update({
                "symbol": symbol.replace("/", ""), "qty": num(qty), "qty_available": num(qty),
                "avg_entry_price": num(cost / qty), "side": "long" if qty > 0 else "short",
                "market_value": num(value), "cost_basis": num(cost), "unrealized_pl": num(value - cost),
                "unrealized_plpc": num((value - cost) / cost), "current_price": num(price),
            })
            items.append(position)
        return reply(200, items)

    def _buying_power(self) -> Decimal:
        reserved = sum((Decimal(o["qty"]) * Decimal(o["limit_price"] or 0)
                        for o in self.orders.values() if o["status"] in OPEN and o["side"] == "buy"), Decimal(0))
        return self.cash - reserved

    def _account(self, request):
        equity = self.cash + sum((qty * self.prices[s] for s, (qty, _) in self.held.items()), Decimal(0))
        account = wire("account.json")
        account.update({
            "cash": num(self.cash), "equity": num(equity), "portfolio_value": num(equity),
            "last_equity": num(self.start_equity), "buying_power": num(self._buying_power() * 2),
            "regt_buying_power": num(self._buying_power() * 2),
            "non_marginable_buying_power": num(self._buying_power()),
        })
        return reply(200, account)

    def _latest_trade(self, request):
        symbols = parse_qs(urlsplit(request.url).query).get("symbols", [""])[0].split(",")
        template = wire("latest_trade_crypto.json" if "/" in symbols[0] else "latest_trade_stock.json")
        trade = next(iter(template["trades"].values()))
        trades = {s: dict(trade, p=float(self.prices[s]), t=stamp()) for s in symbols if s in self.prices}
        return reply(200, {"trades": trades})


class Venue:
    """`with Venue() as v:` -> v.adapter (AlpacaAdapter) talking to a FakeAlpaca (v.fake)."""

    def __init__(self, *, asset_class: AssetClass = AssetClass.US_EQUITY, live: bool = False):
        self.asset_class = asset_class
        self.live = live
        self.currency = "USD"
        if asset_class == AssetClass.CRYPTO:
            self.symbol, self.qty, self.price = "BTC/USD", Decimal("0.01"), Decimal("64250.5")
            self.price_below_market, self.price_above_market = Decimal("50000"), Decimal("80000")
            self.time_in_force = self.market_time_in_force = TimeInForce.GTC
            self.supports_stop = False  # Alpaca crypto has stop_limit, not stop
        else:
            self.symbol, self.qty, self.price = "AAPL", Decimal("2"), Decimal("189.5")
            self.price_below_market, self.price_above_market = Decimal("150"), Decimal("230")
            self.time_in_force = self.market_time_in_force = TimeInForce.DAY
            self.supports_stop = True
        self.unknown_order_id = "00000000-0000-4000-8000-000000000000"
        self.fake = FakeAlpaca(prices={self.symbol: self.price})
        self.mock = responses.RequestsMock(assert_all_requests_are_fired=False)
        self._settings = override_settings(EQUITY_ORDERS={**settings.EQUITY_ORDERS, "ALPACA_PAPER_URL": PAPER_URL,
                                                          "ALPACA_LIVE_URL": LIVE_URL, "ALPACA_DATA_URL": DATA_URL})

    def __enter__(self) -> Venue:
        self._settings.enable()
        self.mock.start()
        self.fake.install(self.mock, base_url=LIVE_URL if self.live else PAPER_URL)
        self.adapter = AlpacaAdapter(credentials={"api_key": API_KEY, "secret_key": SECRET_KEY},
                                     asset_class=self.asset_class, live=self.live, connection_id=1)
        return self

    def __exit__(self, *exc_info) -> None:
        self.mock.stop()
        self.mock.reset()
        self._settings.disable()
