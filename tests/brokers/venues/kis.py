"""The KIS venue: KisAdapter against FakeKis, a stateful fake of the KIS REST wire.

FakeKis answers through `responses` callbacks with KIS's own field names (shared/brokers/kis.md):
tokenP, order-cash, order-rvsecncl, inquire-daily-ccld, inquire-balance, inquire-psbl-order and
inquire-price. It asserts what KIS requires of every call (Bearer token, appkey, appsecret, the
right tr_id for the host, custtype, upper-case bodies with string values) and answers like KIS
where the wire is known: expired/unknown tokens with HTTP 500 + EGW00123/EGW00121, a second
token inside a minute with 403 EGW00133, refusals with HTTP 200 and rt_cd != "0", order numbers
unpadded in the mock order reply and zero-padded in the inquiry, cancels as their own inquiry row.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import responses
from django.conf import settings

from brokers.conf import conf
from django.contrib.auth import get_user_model
from django.utils import timezone

from brokers.models import BrokerAccount
from brokers.registry import build_adapter
from brokers.types import AssetClass, Environment, Exchange, TimeInForce

KST = ZoneInfo("Asia/Seoul")

APP_KEY = "PSkisFakeAppKey0000000000000000000A"  # 36 characters, like KIS's
APP_SECRET = "S" * 180
ACCOUNT_NO = "50012345-01"
ORGNO = "00950"

PATHS = {
    "token": "/oauth2/tokenP",
    "order": "/uapi/domestic-stock/v1/trading/order-cash",
    "cancel": "/uapi/domestic-stock/v1/trading/order-rvsecncl",
    "daily": "/uapi/domestic-stock/v1/trading/inquire-daily-ccld",
    "balance": "/uapi/domestic-stock/v1/trading/inquire-balance",
    "psbl": "/uapi/domestic-stock/v1/trading/inquire-psbl-order",
    "price": "/uapi/domestic-stock/v1/quotations/inquire-price",
}

DIVISION_NAMES = {"00": "지정가", "01": "시장가", "11": "IOC지정가", "12": "FOK지정가", "13": "IOC시장가",
                  "14": "FOK시장가"}
DAILY_PARAMS = {"CANO", "ACNT_PRDT_CD", "INQR_STRT_DT", "INQR_END_DT", "SLL_BUY_DVSN_CD", "PDNO", "ORD_GNO_BRNO",
                "ODNO", "CCLD_DVSN", "INQR_DVSN", "INQR_DVSN_1", "INQR_DVSN_3", "CTX_AREA_FK100", "CTX_AREA_NK100"}
BALANCE_PARAMS = {"CANO", "ACNT_PRDT_CD", "AFHR_FLPR_YN", "OFL_YN", "INQR_DVSN", "UNPR_DVSN", "FUND_STTL_ICLD_YN",
                  "FNCG_AMT_AUTO_RDPT_YN", "PRCS_DVSN", "CTX_AREA_FK100", "CTX_AREA_NK100"}
PSBL_PARAMS = {"CANO", "ACNT_PRDT_CD", "PDNO", "ORD_UNPR", "ORD_DVSN", "CMA_EVLU_AMT_ICLD_YN", "OVRS_ICLD_YN"}
ORDER_KEYS = {"CANO", "ACNT_PRDT_CD", "PDNO", "ORD_DVSN", "ORD_QTY", "ORD_UNPR"}
CANCEL_KEYS = {"CANO", "ACNT_PRDT_CD", "KRX_FWDG_ORD_ORGNO", "ORGN_ODNO", "ORD_DVSN", "RVSE_CNCL_DVSN_CD", "ORD_QTY",
               "ORD_UNPR", "QTY_ALL_ORD_YN"}


@dataclass
class Call:
    """One request the fake received."""

    method: str
    path: str
    headers: dict
    params: dict = field(default_factory=dict)  # query string of a GET
    body: dict | None = None  # JSON body of a POST


def _tr(live: bool, real: str) -> str:
    """KIS's mock TR is the real one with V for its first letter (quotation TRs are shared)."""
    return real if live or real.startswith("F") else "V" + real[1:]


def _won(amount: Decimal) -> str:
    return str(int(amount))


class FakeKis:
    """One KIS account on one host, kept in memory."""

    def __init__(self, *, live: bool = False, prices: dict[str, Decimal] | None = None,
                 cash: Decimal = Decimal("100000000"), app_key: str = APP_KEY, app_secret: str = APP_SECRET,
                 account_no: str = ACCOUNT_NO, page_size: int | None = None):
        self.live = live
        self.base = (conf.KIS_REAL_URL if live else conf.KIS_MOCK_URL).rstrip("/")
        self.prices = dict(prices or {"005930": Decimal("70000")})
        self.names = {"005930": "삼성전자", "000660": "SK하이닉스"}
        self.app_key, self.app_secret = app_key, app_secret
        self.cano, self.product = account_no.split("-")
        self.cash = cash
        self.start_cash = cash
        self.daily_page = page_size or (100 if live else 15)
        self.balance_page = page_size or (50 if live else 20)
        self.tokens: dict[str, datetime] = {}  # access token -> expiry
        self.issued: list[datetime] = []  # when each token was issued
        self.rows: list[dict] = []  # inquire-daily-ccld rows, oldest first
        # A holding sold out earlier today: KIS keeps listing it with hldg_qty "0".
        self.holdings: dict[str, dict] = {"000660": {"qty": Decimal("0"), "avg": Decimal("180000")}}
        self.prices.setdefault("000660", Decimal("181000"))
        self.seen: list[Call] = []  # every request, in order
        self._next_odno = 4000

    # --- set-up helpers for tests ------------------------------------------------------------

    def install(self, rsps: responses.RequestsMock) -> None:
        rsps.add_callback(responses.POST, self.base + PATHS["token"], callback=self._token)
        rsps.add_callback(responses.POST, self.base + PATHS["order"], callback=self._guarded(self._order))
        rsps.add_callback(responses.POST, self.base + PATHS["cancel"], callback=self._guarded(self._cancel))
        rsps.add_callback(responses.GET, self.base + PATHS["daily"], callback=self._guarded(self._daily))
        rsps.add_callback(responses.GET, self.base + PATHS["balance"], callback=self._guarded(self._balance))
        rsps.add_callback(responses.GET, self.base + PATHS["psbl"], callback=self._guarded(self._psbl))
        rsps.add_callback(responses.GET, self.base + PATHS["price"], callback=self._guarded(self._price))

    def accept_token(self, token: str, *, expires_at: datetime) -> None:
        self.tokens[token] = expires_at

    def calls(self, name: str) -> list[Call]:
        return [c for c in self.seen if c.path == PATHS[name]]

    def add_row(self, **fields) -> dict:
        """An order placed some other way (another day, another device)."""
        self._next_odno += 1
        row = self._row(odno=self._next_odno, **fields)
        self.rows.append(row)
        return row

    # --- the wire --------------------------------------------------------------------------------

    def _token(self, request):
        body = json.loads(request.body)
        self.seen.append(Call("POST", PATHS["token"], dict(request.headers), body=body))
        assert "authorization" not in {k.lower() for k in request.headers}, "tokenP takes no bearer token"
        assert body.get("grant_type") == "client_credentials", body
        now = timezone.now()
        if body.get("appkey") != self.app_key:
            return 403, {}, json.dumps({"error_code": "EGW00103", "error_description": "유효하지 않은 AppKey입니다."})
        if body.get("appsecret") != self.app_secret:
            return 403, {}, json.dumps({"error_code": "EGW00105", "error_description": "유효하지 않은 AppSecret입니다."})
        if self.issued and now - self.issued[-1] < timedelta(minutes=1):
            return 403, {}, json.dumps({"error_code": "EGW00133",
                                        "error_description": "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)"})
        self.issued.append(now)
        token = f"fake-token-{len(self.issued)}-{uuid.uuid4().hex}"
        expires_at = now + timedelta(hours=24)
        self.tokens[token] = expires_at
        return 200, {}, json.dumps({
            "access_token": token, "token_type": "Bearer", "expires_in": 86400,
            "access_token_token_expired": expires_at.astimezone(KST).strftime("%Y-%m-%d %H:%M:%S")})

    def _guarded(self, handler):
        def callback(request):
            url = urlsplit(request.url)
            self.seen.append(Call(request.method, url.path, dict(request.headers),
                                  params=dict(parse_qsl(url.query, keep_blank_values=True)),
                                  body=json.loads(request.body) if request.body else None))
            headers = request.headers
            assert headers.get("appkey") == self.app_key, "appkey header missing or wrong"
            assert headers.get("appsecret") == self.app_secret, "appsecret header missing or wrong"
            assert headers.get("custtype") == "P", "custtype header missing"
            assert headers.get("content-type", "").startswith("application/json"), "content-type header"
            authorization = headers.get("authorization", "")
            assert authorization.startswith("Bearer "), "authorization must be 'Bearer <token>'"
            expires_at = self.tokens.get(authorization.removeprefix("Bearer "))
            if expires_at is None:
                return self._envelope(500, "1", "EGW00121", "유효하지 않은 token 입니다.")
            if expires_at <= timezone.now():
                return self._envelope(500, "1", "EGW00123", "기간이 만료된 token 입니다.")
            return handler(request, headers["tr_id"])
        return callback

    def _order(self, request, tr_id):
        body = json.loads(request.body)
        assert ORDER_KEYS <= set(body), f"order-cash lacks {ORDER_KEYS - set(body)}"
        assert all(k == k.upper() for k in body), "order-cash keys must be upper case"
        assert all(isinstance(v, str) for v in body.values()), "order-cash values must be strings"
        assert (body["CANO"], body["ACNT_PRDT_CD"]) == (self.cano, self.product)
        sides = {_tr(self.live, "TTTC0012U"): "02", _tr(self.live, "TTTC0011U"): "01"}
        assert tr_id in sides, f"{tr_id} is not an order-cash tr_id on this host"
        side, division = sides[tr_id], body["ORD_DVSN"]
        assert division in DIVISION_NAMES, f"unexpected ORD_DVSN {division}"
        market = division in ("01", "13", "14")
        assert not market or body["ORD_UNPR"] == "0", "a market order sends ORD_UNPR 0"
        symbol, qty, limit = body["PDNO"], Decimal(body["ORD_QTY"]), Decimal(body["ORD_UNPR"])
        assert qty == int(qty) > 0
        if symbol not in self.prices:
            return self._refuse("40070000", "모의투자 주문처리가 안되었습니다(매매불가 종목)")
        price = self.prices[symbol]
        if side == "02" and qty * (price if market else limit) > self.cash - self._reserved_cash():
            if self.live:
                return self._envelope(200, "7", "APBK0952", "주문가능금액을 초과 했습니다")
            return self._refuse("40240000", "모의투자 주문가능금액을 초과 했습니다")
        if side == "01" and qty > self._held(symbol) - self._reserved_qty(symbol):
            return self._refuse("40250000", "모의투자 주문가능수량을 초과 했습니다")
        self._next_odno += 1
        row = self._row(odno=self._next_odno, symbol=symbol, side=side, division=division, qty=qty,
                        unit_price=body["ORD_UNPR"])
        self.rows.append(row)
        if market or (side == "02" and limit >= price) or (side == "01" and limit <= price):
            self._fill(row, price)
        elif division in ("11", "12"):  # IOC/FOK that cannot trade now: the rest is canceled at once
            row.update(rmn_qty="0", cnc_cfrm_qty=row["ord_qty"], cncl_yn="Y")
        mock = not self.live
        return self._envelope(200, "0", "40600000" if mock else "APBK0013",
                              "모의투자 매수주문이 완료 되었습니다." if mock else "주문 전송 완료 되었습니다.",
                              output={"KRX_FWDG_ORD_ORGNO": ORGNO,
                                      "ODNO": str(self._next_odno) if mock else row["odno"],
                                      "ORD_TMD": row["ord_tmd"]})

    def _cancel(self, request, tr_id):
        body = json.loads(request.body)
        assert tr_id == _tr(self.live, "TTTC0013U"), f"{tr_id} is not the cancel tr_id on this host"
        assert CANCEL_KEYS <= set(body), f"order-rvsecncl lacks {CANCEL_KEYS - set(body)}"
        assert all(k == k.upper() for k in body) and all(isinstance(v, str) for v in body.values())
        assert (body["CANO"], body["ACNT_PRDT_CD"]) == (self.cano, self.product)
        assert body["RVSE_CNCL_DVSN_CD"] == "02" and body["QTY_ALL_ORD_YN"] == "Y"
        original = next((r for r in self.rows if not r["orgn_odno"]
                         and r["odno"].lstrip("0") == body["ORGN_ODNO"].lstrip("0")
                         and r["ord_gno_brno"] == body["KRX_FWDG_ORD_ORGNO"]), None)
        if original is None or Decimal(original["rmn_qty"]) == 0:
            return self._refuse("40330000", "모의투자 정정/취소할 수량이 없습니다.")
        remaining = original["rmn_qty"]
        original["rmn_qty"] = "0"
        self._next_odno += 1
        cancel = self._row(odno=self._next_odno, symbol=original["pdno"], side=original["sll_buy_dvsn_cd"],
                           division=original["ord_dvsn_cd"], qty=Decimal(remaining), unit_price="0")
        cancel.update(orgn_odno=original["odno"], cncl_yn="Y", cnc_cfrm_qty=remaining, rmn_qty="0")
        self.rows.append(cancel)
        # The portal documents this output in lower case.
        return self._envelope(200, "0", "40640000", "모의투자 취소주문이 완료 되었습니다.",
                              output={"krx_fwdg_ord_orgno": ORGNO, "odno": cancel["odno"],
                                      "ord_tmd": cancel["ord_tmd"]})

    def _daily(self, request, tr_id):
        params = self._params(request, DAILY_PARAMS)
        assert tr_id in (_tr(self.live, "TTTC0081R"), _tr(self.live, "CTSC9215R")), f"{tr_id} for daily inquiry"
        rows = [r for r in reversed(self.rows) if params["INQR_STRT_DT"] <= r["ord_dt"] <= params["INQR_END_DT"]]
        if params["PDNO"]:
            rows = [r for r in rows if r["pdno"] == params["PDNO"]]
        if params["SLL_BUY_DVSN_CD"] != "00":
            rows = [r for r in rows if r["sll_buy_dvsn_cd"] == params["SLL_BUY_DVSN_CD"]]
        if params["ODNO"]:
            rows = [r for r in rows if r["odno"] == params["ODNO"]]
        if params["INQR_DVSN"] == "01":
            rows.reverse()
        return self._page(request, params, rows, self.daily_page, output2={
            "tot_ord_qty": _won(sum((Decimal(r["ord_qty"]) for r in rows), Decimal(0))),
            "tot_ccld_qty": _won(sum((Decimal(r["tot_ccld_qty"]) for r in rows), Decimal(0))),
            "tot_ccld_amt": _won(sum((Decimal(r["tot_ccld_amt"]) for r in rows), Decimal(0))),
            "prsm_tlex_smtl": "0", "pchs_avg_pric": "0"})

    def _balance(self, request, tr_id):
        assert tr_id == _tr(self.live, "TTTC8434R"), f"{tr_id} for balance"
        params = self._params(request, BALANCE_PARAMS)
        holdings = []
        for symbol, h in self.holdings.items():
            price = self.prices[symbol]
            cost, value = h["qty"] * h["avg"], h["qty"] * price
            holdings.append({
                "pdno": symbol, "prdt_name": self.names.get(symbol, symbol), "trad_dvsn_name": "현금",
                "hldg_qty": _won(h["qty"]), "ord_psbl_qty": _won(h["qty"] - self._reserved_qty(symbol)),
                "pchs_avg_pric": f"{h['avg']:.4f}", "pchs_amt": _won(cost), "prpr": _won(price),
                "evlu_amt": _won(value), "evlu_pfls_amt": _won(value - cost),
                "evlu_pfls_rt": f"{(value - cost) / cost * 100:.2f}" if cost else "0.00",
                "evlu_erng_rt": "0", "fltt_rt": "0.00", "bfdy_buy_qty": "0", "bfdy_sll_qty": "0",
                "thdt_buyqty": "0", "thdt_sll_qty": "0", "loan_dt": "", "loan_amt": "0", "expd_dt": ""})
        securities = sum((h["qty"] * self.prices[s] for s, h in self.holdings.items()), Decimal(0))
        totals = {
            "dnca_tot_amt": _won(self.start_cash), "nxdy_excc_amt": _won(self.cash),
            "prvs_rcdl_excc_amt": _won(self.cash), "scts_evlu_amt": _won(securities),
            "tot_evlu_amt": _won(self.cash + securities), "nass_amt": _won(self.cash + securities),
            "bfdy_tot_asst_evlu_amt": _won(self.start_cash), "pchs_amt_smtl_amt": "0", "evlu_amt_smtl_amt": "0",
            "evlu_pfls_smtl_amt": "0", "thdt_buy_amt": "0", "thdt_sll_amt": "0", "thdt_tlex_amt": "0",
            "tot_loan_amt": "0", "asst_icdc_amt": "0", "asst_icdc_erng_rt": "0.00000000"}
        return self._page(request, params, holdings, self.balance_page, output2=[totals])

    def _psbl(self, request, tr_id):
        assert tr_id == _tr(self.live, "TTTC8908R"), f"{tr_id} for orderable amount"
        self._params(request, PSBL_PARAMS)
        free = self.cash - self._reserved_cash()
        return self._envelope(200, "0", "KIOK0510", "조회가 완료되었습니다", output={
            "ord_psbl_cash": _won(free), "ord_psbl_sbst": "0", "ruse_psbl_amt": "0", "fund_rpch_chgs": "0",
            "psbl_qty_calc_unpr": "0", "nrcvb_buy_amt": _won(free), "nrcvb_buy_qty": "0", "max_buy_amt": _won(free),
            "max_buy_qty": "0", "cma_evlu_amt": "0", "ovrs_re_use_amt_wcrc": "0", "ord_psbl_frcr_amt_wcrc": "0"})

    def _price(self, request, tr_id):
        assert tr_id == "FHKST01010100", f"{tr_id} for the current price"
        params = self._params(request, {"FID_COND_MRKT_DIV_CODE", "FID_INPUT_ISCD"})
        assert params["FID_COND_MRKT_DIV_CODE"] == "J"
        price = self.prices.get(params["FID_INPUT_ISCD"])
        if price is None:
            return self._refuse("APBK0656", "해당종목정보가 없습니다.")
        return self._envelope(200, "0", "MCA00000", "정상처리 되었습니다.", output={
            "stck_prpr": _won(price), "prdy_vrss": "0", "prdy_vrss_sign": "3", "prdy_ctrt": "0.00",
            "stck_oprc": _won(price), "stck_hgpr": _won(price), "stck_lwpr": _won(price),
            "stck_mxpr": _won(price * Decimal("1.3")), "stck_llam": _won(price * Decimal("0.7")),
            "stck_sdpr": _won(price), "acml_vol": "0", "aspr_unit": "100", "iscd_stat_cls_code": "55",
            "temp_stop_yn": "N", "stck_shrn_iscd": params["FID_INPUT_ISCD"]})

    # --- bookkeeping ---------------------------------------------------------------------------

    def _row(self, *, odno: int, symbol: str, side: str, division: str, qty: Decimal, unit_price: str,
             ord_dt: str | None = None, ord_tmd: str | None = None) -> dict:
        now = timezone.now().astimezone(KST)
        return {
            "ord_dt": ord_dt or now.strftime("%Y%m%d"), "ord_gno_brno": ORGNO, "odno": f"{odno:010d}",
            "orgn_odno": "", "ord_dvsn_name": DIVISION_NAMES[division], "ord_dvsn_cd": division,
            "sll_buy_dvsn_cd": side, "sll_buy_dvsn_cd_name": "현금매수" if side == "02" else "현금매도",
            "pdno": symbol, "prdt_name": self.names.get(symbol, symbol), "ord_qty": _won(qty),
            "ord_unpr": unit_price, "ord_tmd": ord_tmd or now.strftime("%H%M%S"), "tot_ccld_qty": "0",
            "avg_prvs": "0", "tot_ccld_amt": "0", "cncl_yn": "N", "cnc_cfrm_qty": "0", "rmn_qty": _won(qty),
            "rjct_qty": "0", "ccld_cndt_name": "없음", "excg_dvsn_cd": "02", "excg_id_dvsn_Cd": "KRX",
            "ord_orgno": "", "stpm_cndt_pric": "0", "infm_tmd": ""}

    def _fill(self, row: dict, price: Decimal) -> None:
        qty, symbol = Decimal(row["ord_qty"]), row["pdno"]
        row.update(tot_ccld_qty=row["ord_qty"], avg_prvs=_won(price), tot_ccld_amt=_won(qty * price), rmn_qty="0")
        held = self.holdings.setdefault(symbol, {"qty": Decimal(0), "avg": Decimal(0)})
        if row["sll_buy_dvsn_cd"] == "02":
            held["avg"] = (held["qty"] * held["avg"] + qty * price) / (held["qty"] + qty)
            held["qty"] += qty
            self.cash -= qty * price
        else:
            held["qty"] -= qty
            self.cash += qty * price

    def _resting(self, side: str):
        return [r for r in self.rows if not r["orgn_odno"] and r["sll_buy_dvsn_cd"] == side
                and Decimal(r["rmn_qty"]) > 0]

    def _reserved_cash(self) -> Decimal:
        return sum((Decimal(r["rmn_qty"]) * Decimal(r["ord_unpr"]) for r in self._resting("02")), Decimal(0))

    def _reserved_qty(self, symbol: str) -> Decimal:
        return sum((Decimal(r["rmn_qty"]) for r in self._resting("01") if r["pdno"] == symbol), Decimal(0))

    def _held(self, symbol: str) -> Decimal:
        return self.holdings.get(symbol, {"qty": Decimal(0)})["qty"]

    # --- wire helpers --------------------------------------------------------------------------

    def _params(self, request, required: set[str]) -> dict:
        params = dict(parse_qsl(urlsplit(request.url).query, keep_blank_values=True))
        assert required <= set(params), f"missing query parameters {required - set(params)}"
        if "CANO" in required:
            assert (params["CANO"], params["ACNT_PRDT_CD"]) == (self.cano, self.product), "account number"
        return params

    def _page(self, request, params: dict, rows: list, size: int, *, output2):
        offset = int(params.get("CTX_AREA_NK100") or 0)
        if offset:
            assert request.headers.get("tr_cont") == "N", "a continuation page must send tr_cont: N"
        more = offset + size < len(rows)
        body = {"rt_cd": "0", "msg_cd": "80020000", "msg1": "모의투자 조회가 완료되었습니다.",
                "ctx_area_fk100": params.get("CTX_AREA_FK100") or "fk" + "".ljust(98),
                "ctx_area_nk100": str(offset + size) if more else "",
                "output1": rows[offset:offset + size], "output2": output2}
        return 200, {"tr_cont": "M" if more else "D"}, json.dumps(body, ensure_ascii=False)

    @staticmethod
    def _envelope(status: int, rt_cd: str, msg_cd: str, msg1: str, **payload):
        return status, {}, json.dumps({"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1, **payload}, ensure_ascii=False)

    def _refuse(self, msg_cd: str, msg1: str):
        return self._envelope(200, "1", msg_cd, msg1 + " ")  # KIS pads msg1 with a trailing space at times


def credentials() -> dict:
    return {"app_key": APP_KEY, "app_secret": APP_SECRET, "account_no": ACCOUNT_NO}


class Venue:
    asset_class = AssetClass.KR_EQUITY
    symbol = "005930"
    qty = Decimal("10")
    price = Decimal("70000")
    price_below_market = Decimal("60000")
    price_above_market = Decimal("80000")
    currency = "KRW"
    time_in_force = TimeInForce.DAY
    market_time_in_force = TimeInForce.DAY
    supports_stop = False

    def __enter__(self) -> Venue:
        self.fake = FakeKis(prices={self.symbol: self.price})
        self._rsps = responses.RequestsMock(assert_all_requests_are_fired=False)
        self._rsps.start()
        self.fake.install(self._rsps)
        user = get_user_model().objects.create_user(username=f"kis-venue-{uuid.uuid4().hex[:8]}")
        connection = BrokerAccount.objects.create(
            user=user, asset_class=AssetClass.KR_EQUITY, exchange=Exchange.KIS, environment=Environment.PAPER,
            credentials=credentials(), key_hint=APP_KEY[-4:])
        self.adapter = build_adapter(connection)
        self.unknown_order_id = f"{timezone.now().astimezone(KST):%Y%m%d}-999999"
        return self

    def __exit__(self, *exc_info) -> None:
        self._rsps.stop()
        self._rsps.reset()
