"""KIS (Korea Investment & Securities) Open API: kr_equity, mock investment (paper) and real (live).

Wire facts: shared/brokers/kis.md. Everything KIS-shaped (tr_ids, upper-case bodies, KST stamps,
envelopes, order numbers) stays in this module; in and out go only brokers.types dataclasses.

- The OAuth token is shared by every worker through the KisAccessToken row (issuance is limited
  to about one a minute and notifies the account holder); one process refreshes it under a row lock.
- An order POST is sent once, never again: when its answer is lost it raises BrokerOutcomeUnknown
  and the service reconciles with find_order (KIS has no client order id).
- broker_order_id is "<order date YYYYMMDD, KST>-<ODNO without leading zeros>": ODNO is only
  unique within a day, and its zero padding differs between the order reply and the inquiry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

import requests
from brokers.conf import conf
from django.db import transaction
from django.utils import timezone

from brokers.fields import CredentialsUndecryptable
from brokers.http import never_sent
from brokers.models import KisAccessToken
from brokers.types import (
    Account,
    AssetClass,
    BrokerOrder,
    Environment,
    Exchange,
    ListScope,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
)
from brokers.errors import (
    BrokerOutcomeUnknown,
    BrokerRejected,
    BrokerUnavailable,
    CredentialsRefused,
    DomainError,
    InsufficientFunds,
    OrderNotFound,
)

logger = logging.getLogger(__name__)

KST = ZoneInfo("Asia/Seoul")

TOKEN_PATH = "/oauth2/tokenP"
ORDER_PATH = "/uapi/domestic-stock/v1/trading/order-cash"
CANCEL_PATH = "/uapi/domestic-stock/v1/trading/order-rvsecncl"
DAILY_PATH = "/uapi/domestic-stock/v1/trading/inquire-daily-ccld"
BALANCE_PATH = "/uapi/domestic-stock/v1/trading/inquire-balance"
BUYING_POWER_PATH = "/uapi/domestic-stock/v1/trading/inquire-psbl-order"
PRICE_PATH = "/uapi/domestic-stock/v1/quotations/inquire-price"

# (transaction, live) -> tr_id. The current TRs; the old ones (TTTC0802U...) may be switched off.
TR_IDS: dict[tuple[str, bool], str] = {
    ("buy", True): "TTTC0012U", ("buy", False): "VTTC0012U",
    ("sell", True): "TTTC0011U", ("sell", False): "VTTC0011U",
    ("cancel", True): "TTTC0013U", ("cancel", False): "VTTC0013U",
    ("daily", True): "TTTC0081R", ("daily", False): "VTTC0081R",  # orders of the last 3 months
    ("daily_old", True): "CTSC9215R", ("daily_old", False): "VTSC9215R",  # older than 3 months
    ("balance", True): "TTTC8434R", ("balance", False): "VTTC8434R",
    ("buying_power", True): "TTTC8908R", ("buying_power", False): "VTTC8908R",
    ("price", True): "FHKST01010100", ("price", False): "FHKST01010100",
}

# ORD_DVSN of order-cash, both ways. KIS orders live for the day: there is no gtc and no stop.
ORDER_DIVISIONS: dict[tuple[OrderType, TimeInForce], str] = {
    (OrderType.LIMIT, TimeInForce.DAY): "00",
    (OrderType.MARKET, TimeInForce.DAY): "01",
    (OrderType.LIMIT, TimeInForce.IOC): "11",
    (OrderType.LIMIT, TimeInForce.FOK): "12",
    (OrderType.MARKET, TimeInForce.IOC): "13",
    (OrderType.MARKET, TimeInForce.FOK): "14",
}
DIVISION_TYPES = {code: key for key, code in ORDER_DIVISIONS.items()}

SIDES = {"01": Side.SELL, "02": Side.BUY}  # sll_buy_dvsn_cd
SIDE_CODES = {side: code for code, side in SIDES.items()}

TOKEN_REFUSED = frozenset({"EGW00123", "EGW00121"})  # expired / invalid token: re-issue once
RATE_LIMITED = "EGW00201"
TOKEN_THROTTLED = "EGW00133"
# EGW00103 bad app key, EGW00104/EGW00105 bad app key/secret (third-party logs), EGW02004 a mock
# key on the real host: the stored credentials do not fit this connection.
CREDENTIALS_REFUSED = frozenset({"EGW00103", "EGW00104", "EGW00105", "EGW02004"})
INSUFFICIENT_CODES = frozenset({"APBK0952"})  # real: 주문가능금액을 초과; mock codes unknown -> msg1
INSUFFICIENT_WORDS = ("주문가능금액", "주문가능수량")

TOKEN_REFRESH_MARGIN = timedelta(minutes=10)
READ_ATTEMPTS = 3
READ_BACKOFF_SECONDS = 0.5  # mock allows 2 requests a second
MAX_PAGES = 50
RECENT_INQUIRY_DAYS = 89  # safely inside the "3 months" of the recent daily-inquiry TR
DEFAULT_LIST_DAYS = 7
FIND_UNDECIDED_FOR = timedelta(seconds=60)  # today's orders can show up late in the inquiry
FIND_CLOCK_SKEW = timedelta(seconds=5)

ORDER_ID = re.compile(r"(\d{8})-0*(\d+)")
SYMBOL = re.compile(r"[0-9A-Z]{6,7}")  # 6-digit stock code (ETN: 7 characters)
ACCOUNT_NO = re.compile(r"(\d{8})-?(\d{2})")

_pause = time.sleep  # tests replace it


class KisAdapter:
    """One KIS account of one user (satisfies brokers.base.BrokerAdapter)."""

    exchange = Exchange.KIS.value
    currency = "KRW"
    SUPPORTED = frozenset({(AssetClass.KR_EQUITY, Environment.PAPER), (AssetClass.KR_EQUITY, Environment.LIVE)})
    CREDENTIAL_FIELDS = ("app_key", "app_secret", "account_no")

    def __init__(self, *, credentials: dict, asset_class: AssetClass, live: bool, connection_id: int):
        missing = [f for f in self.CREDENTIAL_FIELDS if not str(credentials.get(f) or "").strip()]
        if missing:
            raise CredentialsRefused(f"The KIS connection lacks {', '.join(missing)}; reconnect it.")
        account = ACCOUNT_NO.fullmatch(str(credentials["account_no"]).strip())
        if account is None:
            raise CredentialsRefused("The KIS account number must look like 12345678-01; reconnect it.")
        self._app_key = str(credentials["app_key"]).strip()
        self._app_secret = str(credentials["app_secret"]).strip()
        self._cano, self._product = account.group(1), account.group(2)
        self.asset_class = asset_class
        self.live = live
        self.connection_id = connection_id
        self._environment = Environment.LIVE if live else Environment.PAPER
        self._base = (conf.KIS_REAL_URL if live else conf.KIS_MOCK_URL).rstrip("/")
        self._key_digest = hashlib.sha256(self._app_key.encode()).hexdigest()
        self._session = requests.Session()
        self._token: str | None = None
        self._token_expires_at: datetime | None = None

    # --- BrokerAdapter ------------------------------------------------------------------------

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        body = {
            "CANO": self._cano,
            "ACNT_PRDT_CD": self._product,
            "PDNO": _symbol(order.symbol),
            "ORD_DVSN": _division(order),
            "ORD_QTY": _whole(order.qty, "qty", "KIS trades whole shares"),
            "ORD_UNPR": "0" if order.order_type == OrderType.MARKET else _limit_price(order),
            "EXCG_ID_DVSN_CD": "KRX",
        }
        tr_id = TR_IDS[(order.side.value, self.live)]
        try:
            reply, payload, token = self._send("POST", ORDER_PATH, tr_id=tr_id, body=body)
        except requests.RequestException as exc:
            if not never_sent(exc):
                raise BrokerOutcomeUnknown(f"KIS did not answer the order ({type(exc).__name__}); "
                                           "it may have been placed.") from exc
            raise BrokerUnavailable(f"KIS could not be reached ({type(exc).__name__}); "
                                    "no order was sent.") from exc
        output = _upper_keys(payload.get("output")) if payload and payload.get("rt_cd") == "0" else {}
        if output.get("ODNO"):
            now = timezone.now()
            submitted = _order_time(now, output.get("ORD_TMD"))
            return BrokerOrder(
                broker_order_id=_order_id(submitted.astimezone(KST).date(), output["ODNO"]),
                broker_client_id=None, symbol=order.symbol, side=order.side, qty=order.qty,
                filled_qty=Decimal("0"), avg_fill_price=None, order_type=order.order_type,
                status=OrderStatus.ACCEPTED, submitted_at=submitted, updated_at=submitted,
                limit_price=order.limit_price if order.order_type == OrderType.LIMIT else None,
                time_in_force=order.time_in_force)
        refusal = _refusal_code(payload)
        if refusal is not None:
            if refusal in TOKEN_REFUSED:
                self._forget_token(token)  # for the next call; this order is not sent again
            # A gateway refusal (EGW...) never reached the order engine; anything else refused
            # with a 5xx may have been half-processed.
            if reply.status_code < 500 or refusal.startswith("EGW"):
                raise _refusal(payload)
        elif 400 <= reply.status_code < 500 and reply.status_code != 408:
            raise BrokerUnavailable(f"KIS answered the order with HTTP {reply.status_code}; no order was placed.")
        raise BrokerOutcomeUnknown(f"KIS answered the order with HTTP {reply.status_code} and no order number; "
                                   "it may have been placed.")

    def cancel_order(self, broker_order_id: str, *, symbol: str | None = None) -> None:
        day, odno = _parse_order_id(broker_order_id)
        rows = self._daily_rows(day, day, symbol=symbol)
        row, links = _find_row(rows, odno)
        if row is None:
            raise OrderNotFound(f"KIS has no order {broker_order_id}.")
        current = _to_order(row, links, today=_kst_today())
        if current is None:
            raise OrderNotFound(f"KIS has no order {broker_order_id}.")
        if current.status.is_final:
            raise BrokerRejected(f"Order {broker_order_id} is already {current.status}; there is nothing to cancel.")
        body = {
            "CANO": self._cano,
            "ACNT_PRDT_CD": self._product,
            "KRX_FWDG_ORD_ORGNO": str(row.get("ord_gno_brno") or ""),
            "ORGN_ODNO": str(row["odno"]),
            "ORD_DVSN": str(row.get("ord_dvsn_cd") or "00"),
            "RVSE_CNCL_DVSN_CD": "02",
            "ORD_QTY": "0",
            "ORD_UNPR": "0",
            "QTY_ALL_ORD_YN": "Y",
            "EXCG_ID_DVSN_CD": "KRX",
        }
        tr_id = TR_IDS[("cancel", self.live)]
        for attempt in (1, 2):
            try:
                reply, payload, token = self._send("POST", CANCEL_PATH, tr_id=tr_id, body=body,
                                                   broker_order_id=broker_order_id)
            except requests.RequestException as exc:
                raise BrokerUnavailable(f"KIS did not answer the cancel ({type(exc).__name__}).") from exc
            if payload and payload.get("rt_cd") == "0":
                return
            code = _refusal_code(payload)
            if code in TOKEN_REFUSED and attempt == 1:
                self._forget_token(token)  # refused at the gateway: nothing was canceled, safe to send again
                continue
            if code is not None:
                raise _refusal(payload)
            raise BrokerUnavailable(f"KIS answered the cancel with HTTP {reply.status_code} and no result.")

    def get_order(self, broker_order_id: str, *, symbol: str | None = None) -> BrokerOrder:
        day, odno = _parse_order_id(broker_order_id)
        row, links = _find_row(self._daily_rows(day, day, symbol=symbol), odno)
        found = _to_order(row, links, today=_kst_today()) if row is not None else None
        if found is None:
            raise OrderNotFound(f"KIS has no order {broker_order_id}.")
        return found

    def list_orders(self, *, scope: ListScope = ListScope.ALL, symbol: str | None = None,
                    since: datetime | None = None) -> list[BrokerOrder]:
        today = _kst_today()
        start = since.astimezone(KST).date() if since else today - timedelta(days=DEFAULT_LIST_DAYS)
        if scope == ListScope.OPEN:
            start = max(start, today)  # day orders: only today's can still be open
        orders = _orders_from_rows(self._daily_rows(start, today, symbol=symbol), today=today)
        if since is not None:
            orders = [o for o in orders if o.submitted_at >= since]
        if scope == ListScope.OPEN:
            orders = [o for o in orders if not o.status.is_final]
        elif scope == ListScope.CLOSED:
            orders = [o for o in orders if o.status.is_final]
        return sorted(orders, key=lambda o: o.submitted_at, reverse=True)

    def positions(self) -> list[Position]:
        held = []
        for page in self._pages(BALANCE_PATH, TR_IDS[("balance", self.live)], self._balance_params()):
            for row in page.get("output1") or []:
                qty = _num(row, "hldg_qty")
                if qty == 0:  # sold out today: KIS keeps showing it for a while
                    continue
                held.append(Position(
                    symbol=str(row["pdno"]), qty=qty, avg_entry_price=_num(row, "pchs_avg_pric"),
                    current_price=_num(row, "prpr"), unrealized_pnl=_num(row, "evlu_pfls_amt"),
                    unrealized_pnl_pct=_num(row, "evlu_pfls_rt") / 100, currency=self.currency,
                    metadata={"name": str(row.get("prdt_name") or "")}))
        return held

    def account(self) -> Account:
        balance, _ = self._read(BALANCE_PATH, TR_IDS[("balance", self.live)], self._balance_params())
        totals = balance.get("output2")
        totals = totals[0] if isinstance(totals, list) and totals else totals
        if not isinstance(totals, dict):
            raise BrokerUnavailable("KIS sent a balance without account totals.")
        power, _ = self._read(BUYING_POWER_PATH, TR_IDS[("buying_power", self.live)], {
            "CANO": self._cano, "ACNT_PRDT_CD": self._product, "PDNO": "", "ORD_UNPR": "",
            "ORD_DVSN": "01", "CMA_EVLU_AMT_ICLD_YN": "N", "OVRS_ICLD_YN": "N"})
        orderable = power.get("output")
        if not isinstance(orderable, dict):
            raise BrokerUnavailable("KIS sent no orderable amount.")
        last_equity = _num(totals, "bfdy_tot_asst_evlu_amt")
        return Account(
            equity=_num(totals, "tot_evlu_amt"),
            buying_power=_num(orderable, "ord_psbl_cash"),
            cash=_num(totals, "prvs_rcdl_excc_amt"),  # D+2 cash: what is left once today's trades settle
            currency=self.currency,
            as_of=timezone.now(),
            last_equity=last_equity or None,
            metadata={"deposit": _num(totals, "dnca_tot_amt"), "net_assets": _num(totals, "nass_amt")})

    def find_order(self, order: OrderRequest, *, submitted_at: datetime) -> BrokerOrder | None:
        """Match an order whose placement answer was lost: KIS has no client order id.

        A match is the same symbol, side, qty, order division and (for limits) price, received
        between just before submitted_at and the end of the request's timeout.
        """
        now = timezone.now()
        earliest = submitted_at - FIND_CLOCK_SKEW
        latest = submitted_at + timedelta(seconds=conf.BROKER_TIMEOUT_SECONDS) + FIND_CLOCK_SKEW
        try:
            division = _division(order)
        except BrokerRejected:
            return None  # refused before anything was sent: it cannot exist at KIS
        rows = self._daily_rows(earliest.astimezone(KST).date(), now.astimezone(KST).date(),
                                symbol=order.symbol, side=order.side)
        candidates = [
            o for o, row in _orders_with_rows(rows, today=_kst_today())
            if o.symbol == order.symbol and o.side == order.side and o.qty == order.qty
            and row.get("ord_dvsn_cd") == division
            and (order.order_type != OrderType.LIMIT or o.limit_price == order.limit_price)
            and earliest <= o.submitted_at <= latest
        ]
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise BrokerUnavailable(f"{len(candidates)} KIS orders match the lost order; it cannot be told apart.")
        if now - submitted_at < FIND_UNDECIDED_FOR:
            raise BrokerUnavailable("The order is not in KIS's daily inquiry yet; it may still appear.")
        return None

    def latest_price(self, symbol: str) -> Decimal:
        payload, _ = self._read(PRICE_PATH, TR_IDS[("price", self.live)],
                                {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": _symbol(symbol)})
        quote = payload.get("output")
        price = _num(quote, "stck_prpr") if isinstance(quote, dict) else Decimal("0")
        if price <= 0:
            raise BrokerRejected(f"KIS has no current price for {symbol}.")
        return price

    # --- inquiries ----------------------------------------------------------------------------

    def _balance_params(self) -> dict:
        return {"CANO": self._cano, "ACNT_PRDT_CD": self._product, "AFHR_FLPR_YN": "N", "OFL_YN": "",
                "INQR_DVSN": "02", "UNPR_DVSN": "01", "FUND_STTL_ICLD_YN": "N", "FNCG_AMT_AUTO_RDPT_YN": "N",
                "PRCS_DVSN": "00", "CTX_AREA_FK100": "", "CTX_AREA_NK100": ""}

    def _daily_rows(self, start: date, end: date, *, symbol: str | None = None,
                    side: Side | None = None) -> list[dict]:
        """Rows of the daily order inquiry between two KST dates, every page, both TRs as needed."""
        cutoff = _kst_today() - timedelta(days=RECENT_INQUIRY_DAYS)
        spans = []
        if start < cutoff:
            spans.append((start, min(end, cutoff - timedelta(days=1)), TR_IDS[("daily_old", self.live)]))
        if end >= cutoff:
            spans.append((max(start, cutoff), end, TR_IDS[("daily", self.live)]))
        rows: list[dict] = []
        for first, last, tr_id in spans:
            params = {
                "CANO": self._cano, "ACNT_PRDT_CD": self._product,
                "INQR_STRT_DT": first.strftime("%Y%m%d"), "INQR_END_DT": last.strftime("%Y%m%d"),
                "SLL_BUY_DVSN_CD": SIDE_CODES[side] if side else "00",
                "PDNO": _symbol(symbol) if symbol else "", "ORD_GNO_BRNO": "", "ODNO": "",
                "CCLD_DVSN": "00", "INQR_DVSN": "00", "INQR_DVSN_1": "", "INQR_DVSN_3": "00",
                "EXCG_ID_DVSN_CD": "KRX", "CTX_AREA_FK100": "", "CTX_AREA_NK100": "",
            }
            for page in self._pages(DAILY_PATH, tr_id, params):
                rows.extend(r for r in page.get("output1") or [] if isinstance(r, dict))
        return rows

    def _pages(self, path: str, tr_id: str, params: dict) -> Iterator[dict]:
        params, tr_cont = dict(params), ""
        for _ in range(MAX_PAGES):
            payload, more = self._read(path, tr_id, params, tr_cont=tr_cont)
            yield payload
            if not more:
                return
            params["CTX_AREA_FK100"] = str(payload.get("ctx_area_fk100") or "")
            params["CTX_AREA_NK100"] = str(payload.get("ctx_area_nk100") or "")
            tr_cont = "N"
        raise BrokerUnavailable(f"KIS kept paging past {MAX_PAGES} pages; narrow the inquiry.")

    def _read(self, path: str, tr_id: str, params: dict, *, tr_cont: str = "") -> tuple[dict, bool]:
        """One GET with bounded retries; returns the payload and whether more pages follow."""
        token_renewed = False
        attempt = 0
        while True:
            attempt += 1
            try:
                reply, payload, token = self._send("GET", path, tr_id=tr_id, params=params, tr_cont=tr_cont)
            except requests.RequestException as exc:
                if attempt < READ_ATTEMPTS:
                    _pause(READ_BACKOFF_SECONDS * attempt)
                    continue
                raise BrokerUnavailable(f"KIS did not answer ({type(exc).__name__}).") from exc
            if payload and payload.get("rt_cd") == "0":
                return payload, reply.headers.get("tr_cont", "") in ("F", "M")
            code = _refusal_code(payload)
            if code in TOKEN_REFUSED and not token_renewed:
                token_renewed = True
                self._forget_token(token)
                continue
            retryable = code == RATE_LIMITED or (code is None and (reply.status_code >= 500
                                                                    or reply.status_code in (408, 429)
                                                                    or reply.status_code < 400))
            if retryable and attempt < READ_ATTEMPTS:
                _pause(READ_BACKOFF_SECONDS * attempt)
                continue
            if code is not None:
                raise _refusal(payload)
            raise BrokerUnavailable(f"KIS answered HTTP {reply.status_code} without a readable result.")

    # --- HTTP -----------------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, tr_id: str, params: dict | None = None, body: dict | None = None,
              tr_cont: str = "", broker_order_id: str | None = None) -> tuple[requests.Response, dict | None, str]:
        """One HTTP call with the common headers, logged once; returns reply, JSON object or None, token."""
        token = self._access_token()
        headers = {
            "content-type": "application/json; charset=utf-8",
            "authorization": f"Bearer {token}",
            "appkey": self._app_key,
            "appsecret": self._app_secret,
            "tr_id": tr_id,
            "custtype": "P",
        }
        if tr_cont:
            headers["tr_cont"] = tr_cont
        started = time.monotonic()
        try:
            # No redirects: the keys are headers, and brokers.http.never_sent judges one request.
            reply = self._session.request(method, self._base + path, params=params, json=body, headers=headers,
                                          timeout=conf.BROKER_TIMEOUT_SECONDS, allow_redirects=False)
        except requests.RequestException as exc:
            self._log(method, path, tr_id, type(exc).__name__, started, broker_order_id)
            raise
        payload = _json_object(reply)
        outcome = f"http {reply.status_code}"
        if payload is not None:
            code = payload.get("msg_cd") or payload.get("error_code")
            outcome += f" rt_cd={payload.get('rt_cd')} msg_cd={code}"
        else:
            outcome += " unreadable body"
        self._log(method, path, tr_id, outcome, started, broker_order_id)
        return reply, payload, token

    def _log(self, method: str, path: str, tr_id: str, outcome: str, started: float,
             broker_order_id: str | None = None) -> None:
        latency_ms = round((time.monotonic() - started) * 1000)
        logger.info("kis %s %s tr_id=%s -> %s in %d ms", method, path, tr_id, outcome, latency_ms,
                    extra={"exchange": self.exchange, "environment": self._environment.value,
                           "connection_id": self.connection_id, "tr_id": tr_id, "outcome": outcome,
                           "latency_ms": latency_ms, "broker_order_id": broker_order_id})

    # --- the shared OAuth token -----------------------------------------------------------------

    def _access_token(self) -> str:
        now = timezone.now()
        if self._token and self._token_expires_at and self._token_expires_at - TOKEN_REFRESH_MARGIN > now:
            return self._token
        try:
            row = self._token_rows().first()
        except CredentialsUndecryptable:
            row = None  # renewed below
        if row is not None and _fresh(row, now):
            return self._remember(row)
        return self._renew_token(stale=None)

    def _token_rows(self):
        return KisAccessToken.objects.filter(environment=self._environment.value, app_key_digest=self._key_digest)

    def _forget_token(self, stale: str) -> None:
        """KIS refused this token: replace it in the shared row, unless another process already did."""
        self._token, self._token_expires_at = None, None
        self._renew_token(stale=stale)

    def _renew_token(self, *, stale: str | None) -> str:
        with transaction.atomic():
            # One process issues; the others wait on the row lock and then read its result.
            # (On SQLite select_for_update is a no-op, but the IMMEDIATE transaction serializes writers.)
            key = {"environment": self._environment.value, "app_key_digest": self._key_digest}
            try:
                row, _ = KisAccessToken.objects.select_for_update().get_or_create(**key)
            except CredentialsUndecryptable:  # written under a key since removed: it is only a cache
                self._token_rows().delete()
                row, _ = KisAccessToken.objects.select_for_update().get_or_create(**key)
            if _fresh(row, timezone.now()) and row.token.get("access_token") != stale:
                return self._remember(row)
            row.token, row.expires_at = self._issue_token()
            row.save()
        return self._remember(row)

    def _remember(self, row: KisAccessToken) -> str:
        self._token, self._token_expires_at = row.token["access_token"], row.expires_at
        return self._token

    def _issue_token(self) -> tuple[dict, datetime]:
        started = time.monotonic()
        try:
            reply = self._session.post(self._base + TOKEN_PATH, json={
                "grant_type": "client_credentials", "appkey": self._app_key, "appsecret": self._app_secret},
                headers={"content-type": "application/json; charset=utf-8"},
                timeout=conf.BROKER_TIMEOUT_SECONDS)
        except requests.RequestException as exc:
            self._log("POST", TOKEN_PATH, "-", type(exc).__name__, started)
            raise BrokerUnavailable(f"KIS did not answer the token request ({type(exc).__name__}).") from exc
        payload = _json_object(reply) or {}
        code = _refusal_code(payload)
        self._log("POST", TOKEN_PATH, "-", f"http {reply.status_code} error_code={code}", started)
        if code == TOKEN_THROTTLED:
            raise BrokerUnavailable("KIS issues one access token a minute per app key; retry in a minute.")
        if code in CREDENTIALS_REFUSED:
            raise CredentialsRefused(f"KIS refused the app key or secret of this connection ({code}).")
        access_token = payload.get("access_token")
        expires_at = _token_expiry(payload)
        if reply.status_code != 200 or not access_token or expires_at is None:
            raise BrokerUnavailable(f"KIS did not issue an access token (HTTP {reply.status_code}, {code}).")
        return {"access_token": str(access_token)}, expires_at


# --- wire <-> our types ---------------------------------------------------------------------------

def _division(order: OrderRequest) -> str:
    if order.asset_class != AssetClass.KR_EQUITY:
        raise BrokerRejected(f"KIS trades kr_equity here, not {order.asset_class}.")
    if order.order_type in (OrderType.STOP, OrderType.STOP_LIMIT):
        raise BrokerRejected("KIS has no stop orders (stop or stop_limit); use a market or limit order.")
    if order.bracket is not None:
        raise BrokerRejected("KIS has no bracket orders; place the exits as separate orders.")
    if order.time_in_force == TimeInForce.GTC:
        raise BrokerRejected("KIS orders are day orders: time_in_force gtc is not available (use day, ioc or fok).")
    try:
        return ORDER_DIVISIONS[(order.order_type, order.time_in_force)]
    except KeyError:
        raise BrokerRejected(f"KIS has no {order.order_type} order with time_in_force "
                             f"{order.time_in_force}.") from None


def _whole(value: Decimal, name: str, why: str) -> str:
    if value is None or value <= 0 or value != value.to_integral_value():
        raise BrokerRejected(f"{name} {value} is not allowed: {why}.")
    return str(int(value))


def _limit_price(order: OrderRequest) -> str:
    if order.limit_price is None:
        raise BrokerRejected("A KIS limit order needs a limit_price.")
    return _whole(order.limit_price, "limit_price", "KRW prices are whole won")


def _symbol(symbol: str) -> str:
    if not SYMBOL.fullmatch(symbol or ""):
        raise BrokerRejected(f"{symbol!r} is not a KIS stock code (6 digits, e.g. 005930).")
    return symbol


def _json_object(reply: requests.Response) -> dict | None:
    try:
        value = json.loads(reply.content, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _refusal_code(payload: dict | None) -> str | None:
    """The msg_cd (or tokenP's error_code) of a refusal; None when the payload is not one."""
    if not payload:
        return None
    if payload.get("error_code"):
        return str(payload["error_code"])
    if "rt_cd" in payload and payload.get("rt_cd") != "0":
        return str(payload.get("msg_cd") or "")
    return None


def _refusal(payload: dict) -> DomainError:
    code = _refusal_code(payload) or ""
    message = str(payload.get("msg1") or payload.get("error_description") or "").strip()
    if code in TOKEN_REFUSED:
        return BrokerUnavailable(f"KIS refused the access token ({code}); retry.")
    if code in CREDENTIALS_REFUSED:
        return CredentialsRefused(f"KIS refused the credentials of this connection: {message} ({code}).")
    if code.startswith("EGW"):
        return BrokerUnavailable(f"KIS gateway error: {message} ({code}).")
    if code in INSUFFICIENT_CODES or any(word in message for word in INSUFFICIENT_WORDS):
        return InsufficientFunds(f"KIS: {message} ({code}).")
    return BrokerRejected(f"KIS refused the request: {message} ({code}).")


def _upper_keys(output) -> dict:
    """order-cash answers ODNO, order-rvsecncl may answer odno: read keys case-insensitively."""
    return {str(k).upper(): v for k, v in output.items()} if isinstance(output, dict) else {}


def _num(row: dict, key: str) -> Decimal:
    raw = row.get(key)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return Decimal("0")
    try:
        return Decimal(str(raw).strip())
    except InvalidOperation:
        raise BrokerUnavailable(f"KIS sent a malformed number in {key}.") from None


def _token_expiry(payload: dict) -> datetime | None:
    stamp = payload.get("access_token_token_expired")
    if stamp:
        try:  # a KST wall-clock time; expires_in has no reference instant, so it is only a fallback
            return datetime.strptime(str(stamp), "%Y-%m-%d %H:%M:%S").replace(tzinfo=KST).astimezone(UTC)
        except ValueError:
            pass
    try:
        return timezone.now() + timedelta(seconds=int(payload["expires_in"]))
    except (KeyError, TypeError, ValueError):
        return None


def _fresh(row: KisAccessToken, now: datetime) -> bool:
    return bool(row.token.get("access_token")) and row.expires_at is not None \
        and row.expires_at - TOKEN_REFRESH_MARGIN > now


def _kst_today() -> date:
    return timezone.now().astimezone(KST).date()


def _order_time(now: datetime, hhmmss) -> datetime:
    """ORD_TMD is HHMMSS in KST with no date: it belongs to today's KST date."""
    try:
        clock = datetime.strptime(str(hhmmss), "%H%M%S").time()
    except ValueError:
        return now
    return datetime.combine(now.astimezone(KST).date(), clock, tzinfo=KST).astimezone(UTC)


def _norm_odno(odno) -> str:
    return str(odno or "").strip().lstrip("0") or "0"


def _order_id(day: date, odno) -> str:
    return f"{day:%Y%m%d}-{_norm_odno(odno)}"


def _parse_order_id(broker_order_id: str) -> tuple[date, str]:
    match = ORDER_ID.fullmatch(str(broker_order_id or ""))
    try:
        if match is None:
            raise ValueError
        return datetime.strptime(match.group(1), "%Y%m%d").date(), match.group(2)
    except ValueError:
        raise OrderNotFound(f"{broker_order_id!r} is not a KIS order id.") from None


def _links(row: dict) -> str | None:
    """The original order number a cancel/amend row points at, or None for an order of its own."""
    original = str(row.get("orgn_odno") or "").strip()
    if not original or _norm_odno(original) in ("0", _norm_odno(row.get("odno"))):
        return None
    return _norm_odno(original)


def _find_row(rows: list[dict], odno: str) -> tuple[dict | None, list[dict]]:
    target = _norm_odno(odno)
    row = next((r for r in rows if _links(r) is None and _norm_odno(r.get("odno")) == target), None)
    return row, [r for r in rows if _links(r) == target]


def _orders_with_rows(rows: list[dict], *, today: date) -> list[tuple[BrokerOrder, dict]]:
    by_original: dict[str, list[dict]] = {}
    for r in rows:
        if (original := _links(r)) is not None:
            by_original.setdefault(original, []).append(r)
    pairs = []
    for r in rows:
        if _links(r) is None and (o := _to_order(r, by_original.get(_norm_odno(r.get("odno")), []), today=today)):
            pairs.append((o, r))
    return pairs


def _orders_from_rows(rows: list[dict], *, today: date) -> list[BrokerOrder]:
    return [o for o, _ in _orders_with_rows(rows, today=today)]


def _to_order(row: dict, links: list[dict], *, today: date) -> BrokerOrder | None:
    """A daily-inquiry row as a BrokerOrder; None for a kind of order this service never places."""
    division = DIVISION_TYPES.get(str(row.get("ord_dvsn_cd") or ""))
    side = SIDES.get(str(row.get("sll_buy_dvsn_cd") or ""))
    if division is None or side is None:
        logger.debug("kis: skipped an order row of division %s", row.get("ord_dvsn_cd"))
        return None
    order_type, time_in_force = division
    try:
        day = datetime.strptime(str(row["ord_dt"]), "%Y%m%d").date()
        clock = datetime.strptime(str(row.get("ord_tmd") or "000000"), "%H%M%S").time()
    except (KeyError, ValueError):
        raise BrokerUnavailable("KIS sent an order row without a readable date.") from None
    submitted = datetime.combine(day, clock, tzinfo=KST).astimezone(UTC)
    filled = _num(row, "tot_ccld_qty")
    return BrokerOrder(
        broker_order_id=_order_id(day, row.get("odno")), broker_client_id=None, symbol=str(row.get("pdno") or ""),
        side=side, qty=_num(row, "ord_qty"), filled_qty=filled,
        avg_fill_price=_num(row, "avg_prvs") if filled > 0 else None, order_type=order_type,
        status=_status(row, links, day=day, today=today), submitted_at=submitted, updated_at=submitted,
        limit_price=_num(row, "ord_unpr") if order_type == OrderType.LIMIT else None, time_in_force=time_in_force)


def _status(row: dict, links: list[dict], *, day: date, today: date) -> OrderStatus:
    """Our reading of a daily-inquiry row (KIS publishes no status field; see kis.md section 6).

    A cancel shows up as its own row pointing back with orgn_odno; whether the original row or
    the cancel row carries cncl_yn / cnc_cfrm_qty is unconfirmed, so either counts.
    """
    ordered, filled = _num(row, "ord_qty"), _num(row, "tot_ccld_qty")
    canceled = any(r.get("cncl_yn") == "Y" or _num(r, "cnc_cfrm_qty") > 0 for r in [row, *links])
    if _num(row, "rjct_qty") > 0 and filled == 0:
        return OrderStatus.REJECTED
    if filled >= ordered:
        return OrderStatus.FILLED
    if canceled or (filled > 0 and row.get("rmn_qty") is not None and _num(row, "rmn_qty") == 0):
        return OrderStatus.CANCELED
    if day < today:
        return OrderStatus.EXPIRED  # a day order still open after its trading day
    return OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.ACCEPTED
