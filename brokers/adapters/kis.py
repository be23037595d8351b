"""KIS (Korea Investment & Securities) Open API: kr_equity, mock investment (paper) and real (live).

Wire facts: shared/brokers/kis.md. Everything KIS-shaped (tr_ids, upper-case bodies, KST stamps,
envelopes, order numbers) stays in this module; in and out go only brokers.types dataclasses.

- The OAuth token is shared by every worker through the KisAccessToken row (issuance is limited
  to about one a minute and notifies the account holder); one process refreshes it under a row lock.
- An order POST is sent once, never again: when its answer is lost it raises BrokerOutcomeUnknown
  and the service reconciles with find_order (KIS has no client order id, so `client_ids = False`).
- Pacing (kis.md section 11): about 2 requests/s per app key on the mock (모의투자) server and
  about 20/s on the real one (KIS_MOCK_REQUESTS_PER_SECOND, KIS_REAL_REQUESTS_PER_SECOND). Every
  call waits for its turn in one budget per environment + app key kept in the shared cache
  (brokers/pacing.py), so the gunicorn workers together stay under the limit.
- EGW00201 ("초당 거래건수를 초과하였습니다", HTTP 500) is the gateway's per-second refusal. Reads
  and cancels are sent again with backoff (a second cancel can never do more than the first). An
  order POST refused with EGW00201 is NOT sent again: kis.md lists EGW00201 as "back off, retry
  (not for a POST order whose fate is unknown)" and no source documents that the gateway refuses
  before the order engine sees the order. So its outcome is unknown (BrokerOutcomeUnknown): the
  service looks it up and keeps it pending rather than inviting a retry that could double it.
- Today's orders can appear in the daily inquiry with a delay and no bound is documented (kis.md
  section 6): find_order's None only means "not found now"; absence_settled says when the
  inquiry of the order's day is final (after the KRX close).
- IOC/FOK (ORD_DVSN 11-14) are not offered on the mock server: refused before sending.
- Buying power of a cash account is nrcvb_buy_amt of inquire-psbl-order (ord_psbl_cash includes
  margin), which wants a PDNO.
- The paging error "조회이후에 자료가 변경되었습니다" restarts the inquiry from its first page (at most
  KIS_PAGING_RESTARTS times).
- EGW00103 on tokenP is a bad app key, unless it follows repeated token requests for this key:
  then it is KIS's temporary lock-out (kis.md section 2) and the connection is not marked invalid.
- broker_order_id is "<order date YYYYMMDD, KST>-<ODNO without leading zeros>": ODNO is only
  unique within a day, and its zero padding differs between the order reply and the inquiry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

import requests
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from brokers import calendars
from brokers.conf import conf
from brokers.fields import CredentialsUndecryptable
from brokers.http import never_sent
from brokers.models import KisAccessToken
from brokers.pacing import Pacer
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
    ServiceUnavailable,
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
# EGW00103 "유효하지 않은 AppKey" is a bad app key, except right after repeated token requests,
# where KIS answers it as a temporary lock-out (kis.md section 2): see _token_refusal.
APP_KEY_REFUSED = "EGW00103"
# EGW00104/EGW00105 bad app key/secret (third-party logs), EGW02004 a mock key on the real host:
# the stored credentials do not fit this connection.
CREDENTIALS_REFUSED = frozenset({"EGW00104", "EGW00105", "EGW02004"})
# The inquiry's pages changed while they were read; KIS asks to read them again from the first.
PAGES_CHANGED_WORDS = ("조회이후에 자료가 변경",)
# ORD_DVSN of IOC/FOK: not offered on the mock (모의투자) server (kis.md section 4 and its checked facts).
MOCK_UNSUPPORTED_DIVISIONS = frozenset({"11", "12", "13", "14"})
# inquire-psbl-order wants a PDNO; the orderable amount of a cash account (nrcvb_buy_amt) is read
# against this liquid reference stock when no symbol is at hand.
BUYING_POWER_REFERENCE_SYMBOL = "005930"
INSUFFICIENT_CODES = frozenset({"APBK0952"})  # real: 주문가능금액을 초과; mock codes unknown -> msg1
INSUFFICIENT_WORDS = ("주문가능금액", "주문가능수량")

TOKEN_REFRESH_MARGIN = timedelta(minutes=10)
READ_ATTEMPTS = 3
READ_BACKOFF_SECONDS = 0.5  # mock allows 2 requests a second
# EGW00201 (the gateway's per-second refusal) on a read or a cancel: sent again after 0.5, 1, 2 s.
RATE_LIMITED_ATTEMPTS = 4
RATE_LIMITED_BACKOFF_SECONDS = 0.5
# EGW00103 after this many token requests for one app key within TOKEN_REQUESTS_WINDOW is a lock-out.
TOKEN_REQUESTS_FOR_LOCKOUT = 2
TOKEN_REQUESTS_WINDOW = timedelta(minutes=10)
MAX_PAGES = 50
RECENT_INQUIRY_DAYS = 89  # safely inside the "3 months" of the recent daily-inquiry TR
DEFAULT_LIST_DAYS = 7
FIND_CLOCK_SKEW = timedelta(seconds=5)  # our clock against KIS's receipt time (ord_tmd)
# After the KRX close, how long until the daily inquiry is taken as final for that day.
ABSENCE_SETTLES_AFTER_CLOSE = timedelta(minutes=30)

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
    client_ids = False  # no client order id: a re-send after a lost reply could double the order

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
        rate = conf.KIS_REAL_REQUESTS_PER_SECOND if live else conf.KIS_MOCK_REQUESTS_PER_SECOND
        self._pacer = Pacer(broker="kis", key=f"{self._environment.value}:{self._app_key}", group="rest", rate=rate)
        self._session = requests.Session()
        self._token: str | None = None
        self._token_expires_at: datetime | None = None

    # --- BrokerAdapter ------------------------------------------------------------------------

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        body = {
            "CANO": self._cano,
            "ACNT_PRDT_CD": self._product,
            "PDNO": _symbol(order.symbol),
            "ORD_DVSN": self._division(order),
            "ORD_QTY": _whole(order.qty, "qty", "KIS trades whole shares"),
            "ORD_UNPR": "0" if order.order_type == OrderType.MARKET else _limit_price(order),
            "EXCG_ID_DVSN_CD": "KRX",
        }
        tr_id = TR_IDS[(order.side.value, self.live)]
        try:
            reply, payload, token = self._send("POST", ORDER_PATH, tr_id=tr_id, body=body, critical=True)
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
        if refusal == RATE_LIMITED:
            # Not documented as refused before processing (see the module docstring): not sent again.
            raise BrokerOutcomeUnknown("KIS's gateway answered the order with its rate refusal (EGW00201); "
                                       "KIS does not document that the order was not processed.")
        if refusal is not None:
            if refusal in TOKEN_REFUSED:
                self._forget_token(token)  # for the next call; this order is not sent again
            # A token or key refusal (EGW...) is the gateway's check before anything else; anything
            # else refused with a 5xx may have been half-processed.
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
        token_renewed, rate_refusals = False, 0
        while True:
            try:
                reply, payload, token = self._send("POST", CANCEL_PATH, tr_id=tr_id, body=body,
                                                   broker_order_id=broker_order_id)
            except requests.RequestException as exc:
                raise BrokerUnavailable(f"KIS did not answer the cancel ({type(exc).__name__}).") from exc
            if payload and payload.get("rt_cd") == "0":
                return
            code = _refusal_code(payload)
            if code in TOKEN_REFUSED and not token_renewed:
                token_renewed = True
                self._forget_token(token)  # refused at the gateway: nothing was canceled, safe to send again
                continue
            if code == RATE_LIMITED and rate_refusals + 1 < RATE_LIMITED_ATTEMPTS:
                # A cancel sent twice cancels no more than once: sending it again is safe.
                rate_refusals += 1
                _pause(RATE_LIMITED_BACKOFF_SECONDS * 2 ** (rate_refusals - 1))
                continue
            if code is not None:
                if rate_refusals:  # an earlier, rate-refused attempt may have canceled it after all
                    current = self.get_order(broker_order_id, symbol=symbol)
                    if current.status in (OrderStatus.CANCELED, OrderStatus.EXPIRED):
                        return
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
            "CANO": self._cano, "ACNT_PRDT_CD": self._product, "PDNO": BUYING_POWER_REFERENCE_SYMBOL,
            "ORD_UNPR": "", "ORD_DVSN": "01", "CMA_EVLU_AMT_ICLD_YN": "N", "OVRS_ICLD_YN": "N"})
        orderable = power.get("output")
        if not isinstance(orderable, dict):
            raise BrokerUnavailable("KIS sent no orderable amount.")
        last_equity = _num(totals, "bfdy_tot_asst_evlu_amt")
        return Account(
            equity=_num(totals, "tot_evlu_amt"),
            buying_power=_num(orderable, "nrcvb_buy_amt"),  # without margin loan: a cash account's amount
            cash=_num(totals, "prvs_rcdl_excc_amt"),  # D+2 cash: what is left once today's trades settle
            currency=self.currency,
            as_of=timezone.now(),
            last_equity=last_equity or None,
            metadata={"deposit": _num(totals, "dnca_tot_amt"), "net_assets": _num(totals, "nass_amt")})

    def find_order(self, order: OrderRequest, *, submitted_at: datetime) -> BrokerOrder | None:
        """Match an order whose placement answer was lost: KIS has no client order id.

        A match is the same symbol, side, qty, order division and (for limits) price, received by
        KIS (ord_tmd, its receipt time) from just before submitted_at to the end of that KST day:
        today's orders can appear in the daily inquiry with a delay, and no bound is documented.
        Nothing matching is never proof of absence by itself: before absence_settled() says the
        day's inquiry is final (after the KRX close) it raises BrokerUnavailable ("cannot decide
        yet", brokers/base.py), which every caller treats as "keep it pending"; only after that
        it returns None. (The agreed interface lets None mean "nothing matches now" for a service
        that asks absence_settled() itself; raising until then is what keeps a service that
        still reads None as "absent" from rejecting an order KIS may yet show, the rejection
        whose retry would double it. Both read the same once the day has settled.)
        Several candidates -> BrokerUnavailable: the lost order cannot be told apart.
        """
        earliest = submitted_at - FIND_CLOCK_SKEW
        day = submitted_at.astimezone(KST).date()
        latest = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=KST).astimezone(UTC)
        try:
            division = self._division(order)
        except BrokerRejected:
            return None  # refused before anything was sent: it cannot exist at KIS
        first_day = earliest.astimezone(KST).date()
        rows = self._daily_rows(first_day, max(day, first_day), symbol=order.symbol, side=order.side)
        candidates = [
            o for o, row in _orders_with_rows(rows, today=_kst_today())
            if o.symbol == order.symbol and o.side == order.side and o.qty == order.qty
            and row.get("ord_dvsn_cd") == division
            and (order.order_type != OrderType.LIMIT or o.limit_price == order.limit_price)
            and earliest <= o.submitted_at < latest
        ]
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise BrokerUnavailable(f"{len(candidates)} KIS orders match the lost order; it cannot be told apart.")
        return None  # not in the inquiry now: today's orders can show up late, so this proves nothing

    def absence_settled(self, *, submitted_at: datetime, now: datetime) -> bool:
        """True once the daily inquiry of the order's day is final: the KRX session it was sent
        for has closed (ABSENCE_SETTLES_AFTER_CLOSE ago). Before that an order find_order does
        not see may still appear; the service keeps it pending. A calendar that cannot answer
        -> False (keep waiting)."""
        try:
            close = calendars.session_close(AssetClass.KR_EQUITY.value, submitted_at)
        except ServiceUnavailable:
            return False
        return now >= close + ABSENCE_SETTLES_AFTER_CLOSE

    def latest_price(self, symbol: str) -> Decimal:
        payload, _ = self._read(PRICE_PATH, TR_IDS[("price", self.live)],
                                {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": _symbol(symbol)})
        quote = payload.get("output")
        price = _num(quote, "stck_prpr") if isinstance(quote, dict) else Decimal("0")
        if price <= 0:
            raise BrokerRejected(f"KIS has no current price for {symbol}.")
        return price

    def _division(self, order: OrderRequest) -> str:
        """ORD_DVSN of an order this connection can send; BrokerRejected before any HTTP call otherwise."""
        division = _division(order)
        if not self.live and division in MOCK_UNSUPPORTED_DIVISIONS:
            raise BrokerRejected(f"KIS's mock server (모의투자) does not offer {order.time_in_force} orders "
                                 "(IOC/FOK divisions 11-14); use time_in_force day.")
        return division

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

    def _pages(self, path: str, tr_id: str, params: dict) -> list[dict]:
        """Every page of an inquiry. When KIS says the data changed since the first page
        ("조회이후에 자료가 변경되었습니다"), the pages read so far are dropped and the inquiry starts
        again from the first page, at most KIS_PAGING_RESTARTS times."""
        for _ in range(1 + conf.KIS_PAGING_RESTARTS):
            try:
                return self._pages_once(path, tr_id, params)
            except _PagesChanged:
                logger.info("kis %s: pages changed while read; reading again from the first", path)
                continue
        raise BrokerUnavailable("KIS's inquiry kept changing while it was read; retry.")

    def _pages_once(self, path: str, tr_id: str, params: dict) -> list[dict]:
        params, tr_cont, pages = dict(params), "", []
        for _ in range(MAX_PAGES):
            payload, more = self._read(path, tr_id, params, tr_cont=tr_cont)
            pages.append(payload)
            if not more:
                return pages
            params["CTX_AREA_FK100"] = str(payload.get("ctx_area_fk100") or "")
            params["CTX_AREA_NK100"] = str(payload.get("ctx_area_nk100") or "")
            tr_cont = "N"
        raise BrokerUnavailable(f"KIS kept paging past {MAX_PAGES} pages; narrow the inquiry.")

    def _read(self, path: str, tr_id: str, params: dict, *, tr_cont: str = "") -> tuple[dict, bool]:
        """One GET with bounded retries; returns the payload and whether more pages follow.

        Transport failures and 5xx: READ_ATTEMPTS in all. EGW00201 (rate refusal): up to
        RATE_LIMITED_ATTEMPTS, backing off 0.5, 1, 2 s. An expired token: re-issued once.
        """
        token_renewed = False
        attempt = rate_refusals = 0
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
            if code == RATE_LIMITED:
                rate_refusals += 1
                if rate_refusals < RATE_LIMITED_ATTEMPTS:
                    attempt -= 1  # a rate refusal has its own budget of attempts
                    _pause(RATE_LIMITED_BACKOFF_SECONDS * 2 ** (rate_refusals - 1))
                    continue
                raise _refusal(payload)
            if code is not None and _pages_changed(payload):
                raise _PagesChanged()
            retryable = code is None and (reply.status_code >= 500 or reply.status_code in (408, 429)
                                          or reply.status_code < 400)
            if retryable and attempt < READ_ATTEMPTS:
                _pause(READ_BACKOFF_SECONDS * attempt)
                continue
            if code is not None:
                raise _refusal(payload)
            raise BrokerUnavailable(f"KIS answered HTTP {reply.status_code} without a readable result.")

    # --- HTTP -----------------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, tr_id: str, params: dict | None = None, body: dict | None = None,
              tr_cont: str = "", broker_order_id: str | None = None,
              critical: bool = False) -> tuple[requests.Response, dict | None, str]:
        """One HTTP call with the common headers, paced and logged once; returns reply, JSON object or None,
        token. critical: an order POST (refused with 503 when the pacing cache is down, see brokers/pacing.py)."""
        token = self._access_token()
        self._pacer.wait_turn(critical=critical)
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

    def _count_token_request(self) -> int:
        """Token requests for this app key within TOKEN_REQUESTS_WINDOW, this one included (shared cache)."""
        key = f"kis-token-requests:{self._environment.value}:{self._key_digest[:32]}"
        try:
            cache.add(key, 0, timeout=int(TOKEN_REQUESTS_WINDOW.total_seconds()))
            return int(cache.incr(key))
        except Exception:  # the cache is down: count this one only
            return 1

    def _had_a_token(self) -> bool:
        """KIS issued this app key a token that is valid still, or expired within TOKEN_REQUESTS_WINDOW:
        the key was good a moment ago, so EGW00103 now is the lock-out (a key unused for long and
        refused now is taken as refused)."""
        try:
            row = self._token_rows().first()
        except CredentialsUndecryptable:
            return False
        return bool(row is not None and row.token.get("access_token") and row.expires_at is not None
                    and row.expires_at > timezone.now() - TOKEN_REQUESTS_WINDOW)

    def _remember(self, row: KisAccessToken) -> str:
        self._token, self._token_expires_at = row.token["access_token"], row.expires_at
        return self._token

    def _issue_token(self) -> tuple[dict, datetime]:
        self._pacer.wait_turn()
        requests_made = self._count_token_request()
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
        if code == APP_KEY_REFUSED and (requests_made >= TOKEN_REQUESTS_FOR_LOCKOUT or self._had_a_token()):
            # After repeated token requests KIS answers EGW00103 for a while (kis.md section 2):
            # a temporary lock-out, not keys gone bad. The connection stays valid.
            raise BrokerUnavailable("KIS temporarily refuses token requests for this app key after repeated "
                                    "requests (EGW00103); retry in a few minutes. The keys were not changed.")
        if code in CREDENTIALS_REFUSED or code == APP_KEY_REFUSED:
            raise CredentialsRefused(f"KIS refused the app key or secret of this connection ({code}).")
        access_token = payload.get("access_token")
        expires_at = _token_expiry(payload)
        if reply.status_code != 200 or not access_token or expires_at is None:
            raise BrokerUnavailable(f"KIS did not issue an access token (HTTP {reply.status_code}, {code}).")
        return {"access_token": str(access_token)}, expires_at


# --- wire <-> our types ---------------------------------------------------------------------------

class _PagesChanged(Exception):
    """KIS's inquiry changed between its pages: read it again from the first page."""


def _pages_changed(payload: dict) -> bool:
    message = str(payload.get("msg1") or "")
    return any(word in message for word in PAGES_CHANGED_WORDS)


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
    # An amendment (정정) row carries the fills of the part moved to its new price: they are this order's.
    filling = [row, *(r for r in links if str(r.get("cncl_yn") or "").upper() != "Y")]
    filled = sum((_num(r, "tot_ccld_qty") for r in filling), Decimal(0))
    amount = sum((_num(r, "tot_ccld_amt") for r in filling), Decimal(0))
    if filled > 0 and len(filling) > 1 and amount > 0:
        avg_fill_price = amount / filled
    else:
        avg_fill_price = _num(row, "avg_prvs") if filled > 0 else None
    return BrokerOrder(
        broker_order_id=_order_id(day, row.get("odno")), broker_client_id=None, symbol=str(row.get("pdno") or ""),
        side=side, qty=_num(row, "ord_qty"), filled_qty=filled,
        avg_fill_price=avg_fill_price, order_type=order_type,
        status=_status(row, links, day=day, today=today), submitted_at=submitted, updated_at=submitted,
        limit_price=_num(row, "ord_unpr") if order_type == OrderType.LIMIT else None, time_in_force=time_in_force)


def _status(row: dict, links: list[dict], *, day: date, today: date) -> OrderStatus:
    """The status of an order from the quantities of its row and its linked rows.

    KIS publishes no status field (kis.md section 6). Rows linked by orgn_odno are of two kinds:
    cancel rows (cncl_yn "Y") and amendment rows (정정, cncl_yn "N"), which carry the part of
    the order moved to a new price and its fills. So, with every quantity a count of shares:

    - filled = the order's tot_ccld_qty plus its amendments' (the order keeps an amendment's fills);
    - canceled = cancel quantity KIS confirmed (cnc_cfrm_qty), on the order row or on its cancel
      rows, whichever carries it (never both added), plus what was canceled of an amendment;
      a cancel row without cnc_cfrm_qty is a pending cancel, one with rjct_qty a refused one:
      neither cancels anything, and cncl_yn alone decides nothing;
    - remaining = what can still fill: ordered - filled - canceled - rejected, and no more than
      what KIS reports as rmn_qty on the order and its amendments.

    Then: all filled -> filled; rejected with nothing filled -> rejected; something remaining ->
    open (accepted / partially_filled) on its day, expired after it (a day order); nothing
    remaining -> canceled. This covers an IOC/FOK whose unfilled part the exchange dropped
    (rmn_qty 0 without a cancel row): canceled, not accepted all day.
    """
    cancels = [r for r in links if str(r.get("cncl_yn") or "").upper() == "Y"]
    amendments = [r for r in links if str(r.get("cncl_yn") or "").upper() != "Y"]
    ordered = _num(row, "ord_qty")
    filled = _num(row, "tot_ccld_qty") + sum((_num(r, "tot_ccld_qty") for r in amendments), Decimal(0))
    confirmed_on_cancels = sum((_num(r, "cnc_cfrm_qty") for r in cancels if _num(r, "rjct_qty") == 0), Decimal(0))
    canceled = max(_num(row, "cnc_cfrm_qty"), confirmed_on_cancels) \
        + sum((_num(r, "cnc_cfrm_qty") for r in amendments), Decimal(0))
    rejected = _num(row, "rjct_qty")
    remaining = ordered - filled - canceled - rejected
    reported = [_num(r, "rmn_qty") for r in (row, *amendments) if r.get("rmn_qty") is not None]
    if reported:
        remaining = min(remaining, sum(reported, Decimal(0)))
    if filled >= ordered:
        return OrderStatus.FILLED
    if rejected > 0 and filled == 0 and canceled == 0:
        return OrderStatus.REJECTED
    if remaining > 0:
        if day < today:
            return OrderStatus.EXPIRED  # a day order still open after its trading day
        return OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.ACCEPTED
    return OrderStatus.CANCELED
