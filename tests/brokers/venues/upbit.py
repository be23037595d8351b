"""Upbit venue: the real UpbitAdapter against a stateful fake of Upbit's REST wire.

The fake answers with Upbit's own field names and shapes (../shared/brokers/upbit.md): numbers as
strings on exchange endpoints and JSON numbers on the ticker, KST `created_at`, the
{"error": {"name", "message"}} envelope, 201 on create. Every private call has its JWT checked
the way Upbit does (signature with the secret, access_key, a never-reused nonce, and
query_hash = SHA-512 of the query string or body fields as sent); a failed check answers
Upbit's 401, so a signing bug fails the contract tests.

Behaviour: limits that are marketable fill at once at the market price, others rest (`wait`);
IOC/FOK that cannot fill end `cancel`; a market buy (`price`) buys floor(amount / price) to 8
decimals and ends `done` when that spent the amount exactly, else `cancel` with the leftover
released (as Upbit does); a market sell (`market`) fills its volume. Prices must sit on the
2025-07-31 KRW tick grid, orders total at least 5,000 KRW, identifiers are single-use.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_DOWN, Decimal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import jwt
import responses
from django.conf import settings

from brokers.conf import conf

from brokers.adapters.upbit import UpbitAdapter
from brokers.types import AssetClass, TimeInForce
from tests.loopback import DropConnection

KST = timezone(timedelta(hours=9))
ACCESS_KEY = "test-access-key-00000000000000000000000"
SECRET_KEY = "test-secret-key-0123456789abcdefghijklmnop"  # Upbit secrets are 40+ plain characters
MIN_TOTAL = Decimal("5000")
JSON = "application/json; charset=utf-8"
_PRICE_FIELD = re.compile(r'"(opening_price|high_price|low_price|trade_price|prev_closing_price)": "([0-9.]+)"')

# KRW market tick by price, policy of 2025-07-31 (upbit.md §9): (lower bound, tick), highest first.
KRW_TICKS = [
    (Decimal("1000000"), Decimal("1000")), (Decimal("500000"), Decimal("500")),
    (Decimal("100000"), Decimal("100")), (Decimal("50000"), Decimal("50")), (Decimal("10000"), Decimal("10")),
    (Decimal("5000"), Decimal("5")), (Decimal("100"), Decimal("1")), (Decimal("10"), Decimal("0.1")),
    (Decimal("1"), Decimal("0.01")), (Decimal("0.1"), Decimal("0.001")), (Decimal("0.01"), Decimal("0.0001")),
    (Decimal("0.001"), Decimal("0.00001")), (Decimal("0.0001"), Decimal("0.000001")),
    (Decimal("0.00001"), Decimal("0.0000001")), (Decimal("0"), Decimal("0.00000001")),
]


def krw_tick(price: Decimal) -> Decimal:
    return next(tick for floor, tick in KRW_TICKS if price >= floor)


def s(value: Decimal) -> str:
    """Upbit's number strings: plain notation, no exponent."""
    return format(value.normalize(), "f") if value else "0"


def error(status: int, name: str | int, message: str):
    return status, {"Content-Type": JSON}, json.dumps({"error": {"name": name, "message": message}},
                                                      ensure_ascii=False)


class FakeUpbit:
    """Upbit's exchange and quotation endpoints as responses callbacks, with state."""

    def __init__(self, base_url: str, *, prices: dict[str, Decimal], krw: Decimal,
                 access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY):
        self.base_url = base_url.rstrip("/")
        self.access_key, self.secret_key = access_key, secret_key
        self.prices = dict(prices)
        self.krw = {"balance": krw, "locked": Decimal("0")}
        self.coins: dict[str, dict[str, Decimal]] = {}
        self.orders: dict[str, dict] = {}
        self.identifiers: set[str] = set()
        self.nonces: set[str] = set()
        self.auth_failures: list[str] = []
        self.tokens: list[dict] = []  # decoded JWT payloads, for tests that look at them

    # --- wiring -------------------------------------------------------------------------------

    def install(self, rsps: responses.RequestsMock) -> None:
        routes = [
            ("POST", "/v1/orders", self._create), ("GET", "/v1/order", self._get),
            ("DELETE", "/v1/order", self._cancel), ("GET", "/v1/orders/open", self._open),
            ("GET", "/v1/orders/closed", self._closed), ("GET", "/v1/accounts", self._accounts),
        ]
        for method, path, handler in routes:
            rsps.add_callback(method, self.base_url + path, callback=self._private(handler))
        rsps.add_callback("GET", self.base_url + "/v1/ticker", callback=self._ticker)

    def _private(self, handler):
        def callback(request):
            refusal = self._authorize(request)
            if refusal is not None:
                return refusal
            status, payload = handler(request)
            if isinstance(payload, tuple):  # an error() triple
                return payload
            return status, {"Content-Type": JSON, "Remaining-Req": "group=default; min=1800; sec=29"}, \
                json.dumps(payload, ensure_ascii=False)
        return callback

    def _authorize(self, request):
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return self._auth_error("no_authorization_token", "인증 정보가 없습니다.")
        try:
            claims = jwt.decode(header[len("Bearer "):], self.secret_key, algorithms=["HS256", "HS512"])
        except jwt.InvalidTokenError:
            return self._auth_error("jwt_verification", "Jwt 토큰 검증에 실패했습니다.")
        self.tokens.append(claims)
        if claims.get("access_key") != self.access_key:
            return self._auth_error("invalid_access_key", "잘못된 엑세스 키입니다.")
        nonce = claims.get("nonce")
        if not nonce or nonce in self.nonces:
            return self._auth_error("nonce_used", "이미 요청한 nonce값이 다시 사용되었습니다.")
        self.nonces.add(nonce)
        signed = self._signed_string(request)
        if signed:
            expected = hashlib.sha512(signed.encode("utf-8")).hexdigest()
            if claims.get("query_hash_alg", "SHA512") != "SHA512" or claims.get("query_hash") != expected:
                return self._auth_error("invalid_query_payload", "JWT 헤더의 페이로드가 올바르지 않습니다.")
        elif "query_hash" in claims:
            return self._auth_error("invalid_query_payload", "JWT 헤더의 페이로드가 올바르지 않습니다.")
        return None

    def _auth_error(self, name: str, message: str):
        self.auth_failures.append(name)
        return error(401, name, message)

    @staticmethod
    def _signed_string(request) -> str:
        """What Upbit hashes: the query string as sent, unencoded; or the JSON body's pairs in order."""
        if request.method == "POST" and request.body:
            body = json.loads(request.body)
            return unquote(urlencode([(k, v) for k, v in body.items() if v is not None]))
        return unquote(urlsplit(request.url).query)

    @staticmethod
    def _query(request) -> list[tuple[str, str]]:
        return parse_qsl(urlsplit(request.url).query, keep_blank_values=True)

    # --- exchange endpoints ---------------------------------------------------------------------

    def _create(self, request):
        body = json.loads(request.body)
        market, side, ord_type = body.get("market"), body.get("side"), body.get("ord_type")
        identifier = body.get("identifier")
        if identifier is not None:
            if identifier in self.identifiers:
                return 400, error(400, "duplicated_identifier", "identifier가 중복되었습니다.")
            self.identifiers.add(identifier)  # single-use, even when the order then fails
        if market not in self.prices:
            return 400, error(400, "notfoundmarket", f"다음 마켓에 없는 종목입니다: {market}")
        if side not in ("bid", "ask"):
            return 400, error(400, "validation_error", "side is missing, side does not have a valid value")
        create_error = "create_bid_error" if side == "bid" else "create_ask_error"
        volume = Decimal(body["volume"]) if body.get("volume") is not None else None
        price = Decimal(body["price"]) if body.get("price") is not None else None
        tif = body.get("time_in_force")
        if ord_type == "limit":
            if volume is None or price is None:
                return 400, error(400, create_error, "주문 요청 정보가 올바르지 않습니다.")
            if tif not in (None, "ioc", "fok", "post_only"):
                return 400, error(400, "invalid_time_in_force", "잘못된 time_in_force 입니다.")
            if price % krw_tick(price):
                return 400, error(400, f"invalid_price_{side}", "주문가격 단위를 잘못 입력하셨습니다. 확인 후 시도해주세요.")
            total = price * volume
        elif ord_type == "price":
            if side != "bid" or price is None or volume is not None:
                return 400, error(400, create_error, "주문 요청 정보가 올바르지 않습니다.")
            total = price
        elif ord_type == "market":
            if side != "ask" or volume is None or price is not None:
                return 400, error(400, create_error, "주문 요청 정보가 올바르지 않습니다.")
            total = volume * self.prices[market]
        else:
            return 400, error(400, "invalid_parameter", "잘못된 파라미터입니다.")
        if ord_type != "limit" and tif is not None:
            return 400, error(400, "invalid_time_in_force", "잘못된 time_in_force 입니다.")
        if volume is not None and volume != volume.quantize(Decimal("0.00000001")):
            return 400, error(400, f"invalid_volume_{side}", "주문수량 단위를 잘못 입력하셨습니다.")
        if total < MIN_TOTAL:
            return 400, error(400, f"under_min_total_{side}", "최소주문금액 이상으로 주문해주세요")
        coin = self._coin(market)
        if side == "bid" and self.krw["balance"] < total:
            return 400, error(400, "insufficient_funds_bid", "주문 가능한 금액(KRW)이 부족합니다.")
        if side == "ask" and coin["balance"] < volume:
            return 400, error(400, "insufficient_funds_ask", "주문 가능한 수량이 부족합니다.")

        order = {"uuid": str(uuid.uuid4()), "identifier": identifier, "market": market, "side": side,
                 "ord_type": ord_type, "price": price, "volume": volume, "state": "wait",
                 "created_at": datetime.now(KST), "executed_volume": Decimal("0"), "trades": [],
                 "time_in_force": tif, "locked": Decimal("0")}
        self.orders[order["uuid"]] = order
        last = self.prices[market]
        if ord_type == "price":
            bought = (price / last).quantize(Decimal("0.00000001"), rounding=ROUND_DOWN)
            self._trade(order, bought, last)
            order["state"] = "done" if bought * last == price else "cancel"  # leftover KRW released
        elif ord_type == "market":
            self._trade(order, volume, last)
            order["state"] = "done"
        elif (side == "bid" and price >= last) or (side == "ask" and price <= last):
            self._trade(order, volume, last)
            order["state"] = "done"
        elif tif in ("ioc", "fok"):
            order["state"] = "cancel"
        else:
            self._lock(order)
        return 201, self._wire(order)

    def _get(self, request):
        order = self._find(dict(self._query(request)))
        if order is None:
            return 404, error(404, "order_not_found", "주문을 찾지 못했습니다.")
        return 200, self._wire(order, trades=True)

    def _cancel(self, request):
        if request.body:
            return 400, error(400, "QUERY_PARAMETER_NOT_SUPPORTED", "Query parameter만 지원합니다.")
        order = self._find(dict(self._query(request)))
        # Cancelling a done/cancel order: Upbit documents no answer; it is taken here to be the same
        # 404 as an unknown order (the adapter looks the order up whatever the 4xx).
        if order is None or order["state"] not in ("wait", "watch"):
            return 404, error(404, "order_not_found", "주문을 찾지 못했습니다.")
        reply = self._wire(order)  # the order as it was when the cancel was accepted: still `wait`
        self._unlock(order)
        order["state"] = "cancel"
        return 200, reply

    def _open(self, request):
        query = self._query(request)
        params = dict(query)
        states = [v for k, v in query if k == "states[]"]
        if states and "state" in params:
            return 400, error(400, "invalid_parameter", "state와 states는 함께 사용할 수 없습니다.")
        states = states or [params.get("state", "wait")]
        limit, page = int(params.get("limit", 100)), int(params.get("page", 1))
        if limit > 100:
            return 400, error(400, "invalid_parameter", "limit은 100 이하입니다.")
        rows = [o for o in self._sorted(params) if o["state"] in states]
        return 200, [self._wire(o, funds=True) for o in rows[(page - 1) * limit: page * limit]]

    def _closed(self, request):
        query = self._query(request)
        params = dict(query)
        states = [v for k, v in query if k == "states[]"] or ([params["state"]] if "state" in params
                                                               else ["done", "cancel"])
        start, end = _moment(params.get("start_time")), _moment(params.get("end_time"))
        if start and end and end - start > timedelta(days=7):
            return 400, error(400, "validation_error", "조회 기간은 최대 7일입니다.")
        if start and not end:
            end = start + timedelta(days=7)
        elif end and not start:
            start = end - timedelta(days=7)
        elif not start:
            end = datetime.now(UTC)
            start = end - timedelta(days=7)
        limit = int(params.get("limit", 100))
        if limit > 1000:
            return 400, error(400, "invalid_parameter", "limit은 1000 이하입니다.")
        rows = [o for o in self._sorted(params) if o["state"] in states and start <= o["created_at"] <= end]
        return 200, [self._wire(o, funds=True) for o in rows[:limit]]

    def _accounts(self, request):
        rows = [{"currency": "KRW", "balance": s(self.krw["balance"]), "locked": s(self.krw["locked"]),
                 "avg_buy_price": "0", "avg_buy_price_modified": False, "unit_currency": "KRW"}]
        rows += [{"currency": cur, "balance": s(c["balance"]), "locked": s(c["locked"]),
                  "avg_buy_price": s(c["avg_buy_price"]), "avg_buy_price_modified": False, "unit_currency": "KRW"}
                 for cur, c in self.coins.items()]
        return 200, rows

    # --- quotation (public) -------------------------------------------------------------------

    def _ticker(self, request):
        markets = dict(self._query(request)).get("markets", "")
        wanted = [m for m in markets.split(",") if m]
        if not wanted:
            return error(400, 400, "Missing request parameter error. Check the required parameters!")
        if any(m not in self.prices for m in wanted):
            return error(404, 404, "Code not found")
        now = datetime.now(UTC)
        rows = [{"market": m, "trade_date": now.strftime("%Y%m%d"), "trade_time": now.strftime("%H%M%S"),
                 "trade_timestamp": int(now.timestamp() * 1000), "opening_price": f"{self.prices[m]:f}",
                 "high_price": f"{self.prices[m]:f}", "low_price": f"{self.prices[m]:f}",
                 "trade_price": f"{self.prices[m]:f}", "prev_closing_price": f"{self.prices[m]:f}",
                 "change": "EVEN", "change_price": 0.0, "change_rate": 0.0, "signed_change_price": 0.0,
                 "signed_change_rate": 0.0, "trade_volume": 0.001, "acc_trade_price_24h": 1.0e10,
                 "acc_trade_volume_24h": 100.0, "timestamp": int(now.timestamp() * 1000)} for m in wanted]
        # Quotation prices are JSON numbers on the wire: unquote them, digits exactly as held.
        body = _PRICE_FIELD.sub(r'"\1": \2', json.dumps(rows))
        return 200, {"Content-Type": JSON, "Remaining-Req": "group=ticker; min=600; sec=9"}, body

    # --- state helpers ------------------------------------------------------------------------

    def set_price(self, market: str, price: Decimal) -> None:
        """Move the market; resting limits that it crosses fill at their own price."""
        self.prices[market] = price
        for order in list(self.orders.values()):
            if order["market"] == market and order["state"] == "wait" and order["ord_type"] == "limit":
                if (order["side"] == "bid" and price <= order["price"]) or (
                        order["side"] == "ask" and price >= order["price"]):
                    self._unlock(order)
                    self._trade(order, order["volume"] - order["executed_volume"], order["price"])
                    order["state"] = "done"

    def fill(self, order_uuid: str, volume: Decimal) -> None:
        """A partial fill of a resting limit at its own price."""
        order = self.orders[order_uuid]
        self._unlock(order)
        self._trade(order, volume, order["price"])
        self._lock(order)

    def _coin(self, market: str) -> dict[str, Decimal]:
        currency = market.split("-", 1)[1]
        return self.coins.setdefault(currency, {"balance": Decimal("0"), "locked": Decimal("0"),
                                                "avg_buy_price": Decimal("0")})

    def _remaining(self, order) -> Decimal:
        return order["volume"] - order["executed_volume"]

    def _lock(self, order) -> None:
        if order["side"] == "bid":
            order["locked"] = order["price"] * self._remaining(order)
            self.krw["balance"] -= order["locked"]
            self.krw["locked"] += order["locked"]
        else:
            order["locked"] = self._remaining(order)
            coin = self._coin(order["market"])
            coin["balance"] -= order["locked"]
            coin["locked"] += order["locked"]

    def _unlock(self, order) -> None:
        if order["side"] == "bid":
            self.krw["balance"] += order["locked"]
            self.krw["locked"] -= order["locked"]
        else:
            coin = self._coin(order["market"])
            coin["balance"] += order["locked"]
            coin["locked"] -= order["locked"]
        order["locked"] = Decimal("0")

    def _trade(self, order, volume: Decimal, price: Decimal) -> None:
        if volume <= 0:
            return
        funds = volume * price
        coin = self._coin(order["market"])
        if order["side"] == "bid":
            held = coin["balance"] + coin["locked"]
            coin["avg_buy_price"] = (coin["avg_buy_price"] * held + funds) / (held + volume)
            coin["balance"] += volume
            self.krw["balance"] -= funds
        else:
            coin["balance"] -= volume
            self.krw["balance"] += funds
        order["executed_volume"] += volume
        order["trades"].append({"market": order["market"], "uuid": str(uuid.uuid4()), "price": s(price),
                                "volume": s(volume), "funds": s(funds),
                                "trend": "up" if order["side"] == "bid" else "down",
                                "created_at": datetime.now(KST).isoformat(timespec="microseconds"),
                                "side": order["side"]})

    def _find(self, params: dict) -> dict | None:
        if params.get("uuid"):
            return self.orders.get(params["uuid"])
        if params.get("identifier"):
            return next((o for o in self.orders.values() if o["identifier"] == params["identifier"]), None)
        return None

    def _sorted(self, params: dict) -> list[dict]:
        rows = [o for o in self.orders.values() if not params.get("market") or o["market"] == params["market"]]
        return sorted(rows, key=lambda o: o["created_at"], reverse=params.get("order_by", "desc") == "desc")

    def _wire(self, order: dict, *, trades: bool = False, funds: bool = False) -> dict:
        executed = order["executed_volume"]
        row = {"uuid": order["uuid"], "side": order["side"], "ord_type": order["ord_type"]}
        if order["price"] is not None:
            row["price"] = s(order["price"])
        row.update({"state": order["state"], "market": order["market"],
                    "created_at": order["created_at"].isoformat(timespec="seconds")})
        if order["volume"] is not None:
            row["volume"] = s(order["volume"])
            row["remaining_volume"] = s(order["volume"] - executed)
        row.update({"reserved_fee": "0", "remaining_fee": "0", "paid_fee": "0", "locked": s(order["locked"]),
                    "prevented_volume": "0", "prevented_locked": "0", "executed_volume": s(executed),
                    "trades_count": len(order["trades"])})
        if funds:
            row["executed_funds"] = s(sum((Decimal(t["funds"]) for t in order["trades"]), Decimal("0")))
        if order["time_in_force"]:
            row["time_in_force"] = order["time_in_force"]
        if order["identifier"] is not None:
            row["identifier"] = order["identifier"]
        if trades:
            row["trades"] = list(order["trades"])
        return row



class LaggingUpbit(FakeUpbit):
    """FakeUpbit as Upbit behaves when things go wrong, for a real loopback server (tests.loopback).

    - lose_replies: the next N order POSTs are acted on (the order is placed, the identifier used)
      and then the connection is reset before the answer: a lost reply.
    - lose_requests: the next N order POSTs are reset before Upbit acts on them (nothing placed;
      the client cannot tell this from a lost reply).
    - lookup_lag: a new order is not shown by GET /v1/order?identifier= for its first N lookups
      (Upbit documents no window within which it must show). By uuid it is found at once.
    The identifier stays single-use, as Upbit documents: a second POST under it is refused.
    """

    def __init__(self, base_url: str, *, lookup_lag: int = 0, **kwargs):
        super().__init__(base_url, **kwargs)
        self.lookup_lag = lookup_lag
        self.lose_replies = 0
        self.lose_requests = 0
        self.posted_identifiers: list[str | None] = []  # every order POST that reached Upbit
        self._identifier_lookups: dict[str, int] = {}

    def _create(self, request):
        if self.lose_requests:
            self.lose_requests -= 1
            raise DropConnection
        self.posted_identifiers.append(json.loads(request.body).get("identifier"))
        answer = super()._create(request)
        if self.lose_replies:
            self.lose_replies -= 1
            raise DropConnection
        return answer

    def _find(self, params: dict) -> dict | None:
        order = super()._find(params)
        if order is None or params.get("uuid") or not params.get("identifier"):
            return order
        seen = self._identifier_lookups[order["uuid"]] = self._identifier_lookups.get(order["uuid"], 0) + 1
        return None if seen <= self.lookup_lag else order

def _moment(value: str | None) -> datetime | None:
    if not value:
        return None
    if value.isdigit():
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    return datetime.fromisoformat(value).astimezone(UTC)


class Venue:
    asset_class = AssetClass.CRYPTO
    symbol = "KRW-BTC"
    qty = Decimal("0.001")
    price = Decimal("100000000")  # tick 1,000 KRW; 0.001 BTC = 100,000 KRW
    price_below_market = Decimal("90000000")
    price_above_market = Decimal("110000000")
    currency = "KRW"
    time_in_force = TimeInForce.GTC
    market_time_in_force = TimeInForce.GTC
    supports_stop = False
    unknown_order_id = "8d6e9b4a-2f1c-4c3e-9a7b-0e5d4c3b2a19"

    def __init__(self, *, krw: Decimal = Decimal("10000000"), secret_key: str = SECRET_KEY):
        self._secret_key = secret_key
        self.fake = FakeUpbit(conf.UPBIT_URL, prices={"KRW-BTC": self.price, "KRW-ETH": Decimal("4500000")},
                              krw=krw)
        self.rsps = responses.RequestsMock(assert_all_requests_are_fired=False)

    def __enter__(self) -> Venue:
        self.rsps.start()
        self.fake.install(self.rsps)
        self.adapter = UpbitAdapter(credentials={"access_key": ACCESS_KEY, "secret_key": self._secret_key},
                                    asset_class=AssetClass.CRYPTO, live=True, connection_id=1)
        return self

    def __exit__(self, *exc_info) -> None:
        self.rsps.stop()
        self.rsps.reset()
