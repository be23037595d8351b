"""KisAdapter on the KIS wire: tr_ids, bodies, error codes, transport failures, the shared token,
status mapping of the daily inquiry and matching of orders whose placement answer was lost.

Recorded shapes live in tests/wire/kis/*.json; stateful cases run against FakeKis
(tests/brokers/venues/kis.py). Nothing here reaches the network.
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
from zoneinfo import ZoneInfo

import pytest
import requests
import responses
import time_machine
from django.conf import settings

from brokers.conf import conf
from django.contrib.auth import get_user_model
from django.utils import timezone
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError
from urllib3.exceptions import ProxyError as Urllib3ProxyError

from brokers.adapters import kis
from brokers.adapters.kis import KisAdapter
from brokers.models import BrokerAccount, KisAccessToken
from brokers.registry import build_adapter
from brokers.types import (
    AssetClass,
    Bracket,
    Environment,
    Exchange,
    ListScope,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from brokers.errors import (
    BrokerOutcomeUnknown,
    BrokerRejected,
    BrokerUnavailable,
    CredentialsRefused,
    InsufficientFunds,
    OrderNotFound,
)
from tests.brokers.venues.kis import ACCOUNT_NO, APP_KEY, APP_SECRET, ORGNO, PATHS, FakeKis, credentials

pytestmark = pytest.mark.django_db

KST = ZoneInfo("Asia/Seoul")
WIRE = Path(__file__).resolve().parent.parent / "wire" / "kis"
SEEDED_TOKEN = "seeded-token-0123456789"


# --- fixtures and helpers ---------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _seoul_morning():
    """A trading-day morning in Seoul (2026-07-10 10:00 KST), the clock running from there."""
    with time_machine.travel(datetime(2026, 7, 10, 10, 0, tzinfo=KST), tick=True):
        yield


@pytest.fixture(autouse=True)
def pauses(monkeypatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(kis, "_pause", slept.append)
    return slept


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def fake(rsps) -> FakeKis:
    fake = FakeKis()
    fake.install(rsps)
    return fake


@pytest.fixture
def live_fake(rsps) -> FakeKis:
    fake = FakeKis(live=True)
    fake.install(rsps)
    return fake


def wire(name: str) -> dict:
    return json.loads((WIRE / f"{name}.json").read_text())


def url(path: str, *, live: bool = False) -> str:
    return (conf.KIS_REAL_URL if live else conf.KIS_MOCK_URL).rstrip("/") + path


def make_adapter(*, live: bool = False, **overrides) -> KisAdapter:
    return KisAdapter(credentials={**credentials(), **overrides}, asset_class=AssetClass.KR_EQUITY, live=live,
                      connection_id=7)


def seed_token(token: str = SEEDED_TOKEN, *, live: bool = False, valid_for: timedelta = timedelta(hours=12),
               fake: FakeKis | None = None) -> KisAccessToken:
    """A token some earlier process stored; `fake` is told to accept it."""
    expires_at = timezone.now() + valid_for
    if fake is not None:
        fake.accept_token(token, expires_at=expires_at)
    return KisAccessToken.objects.create(
        environment=(Environment.LIVE if live else Environment.PAPER).value,
        app_key_digest=hashlib.sha256(APP_KEY.encode()).hexdigest(),
        token={"access_token": token}, expires_at=expires_at)


def order_request(**overrides) -> OrderRequest:
    fields = dict(asset_class=AssetClass.KR_EQUITY, symbol="005930", side=Side.BUY, qty=Decimal("10"),
                  order_type=OrderType.LIMIT, time_in_force=TimeInForce.DAY, broker_client_id=uuid.uuid4().hex,
                  limit_price=Decimal("60000"))
    fields.update(overrides)
    return OrderRequest(**fields)


def kst_clock(moment: datetime) -> str:
    return moment.astimezone(KST).strftime("%H%M%S")


def calls_to(rsps, path: str) -> list:
    return [c for c in rsps.calls if urlsplit(c.request.url).path == path]


# --- placing: tr_id, host and body --------------------------------------------------------------------

@pytest.mark.parametrize(("side", "live", "tr_id"), [
    (Side.BUY, False, "VTTC0012U"), (Side.SELL, False, "VTTC0011U"),
    (Side.BUY, True, "TTTC0012U"), (Side.SELL, True, "TTTC0011U"),
])
def test_order_tr_id_follows_side_and_environment(rsps, side, live, tr_id):
    fake = FakeKis(live=live)
    fake.install(rsps)
    fake.holdings["005930"] = {"qty": Decimal("10"), "avg": Decimal("65000")}
    make_adapter(live=live).place_order(order_request(side=side, limit_price=Decimal("90000")
                                                      if side == Side.BUY else Decimal("60000")))
    assert [c.headers["tr_id"] for c in fake.calls("order")] == [tr_id]


@pytest.mark.parametrize(("live", "host_setting"), [(False, "KIS_MOCK_URL"), (True, "KIS_REAL_URL")])
def test_each_environment_talks_to_its_own_host(rsps, live, host_setting):
    FakeKis(live=live).install(rsps)
    make_adapter(live=live).latest_price("005930")
    assert {c.request.url.split("/oauth2")[0].split("/uapi")[0] for c in rsps.calls} == \
        {getattr(conf, host_setting).rstrip("/")}


def test_limit_order_body_has_upper_case_keys_and_string_values_only(rsps):
    seed_token()
    rsps.post(url(PATHS["order"]), json=wire("order_accepted_mock"))
    make_adapter().place_order(order_request(limit_price=Decimal("60000")))
    assert json.loads(calls_to(rsps, PATHS["order"])[0].request.body) == {
        "CANO": "50012345", "ACNT_PRDT_CD": "01", "PDNO": "005930", "ORD_DVSN": "00", "ORD_QTY": "10",
        "ORD_UNPR": "60000", "EXCG_ID_DVSN_CD": "KRX"}


def test_market_order_sends_division_01_with_price_0(rsps):
    seed_token()
    rsps.post(url(PATHS["order"]), json=wire("order_accepted_mock"))
    make_adapter().place_order(order_request(order_type=OrderType.MARKET, limit_price=None))
    body = json.loads(calls_to(rsps, PATHS["order"])[0].request.body)
    assert (body["ORD_DVSN"], body["ORD_UNPR"]) == ("01", "0")


@pytest.mark.parametrize(("order_type", "tif", "division"), [
    (OrderType.LIMIT, TimeInForce.IOC, "11"), (OrderType.LIMIT, TimeInForce.FOK, "12"),
    (OrderType.MARKET, TimeInForce.IOC, "13"), (OrderType.MARKET, TimeInForce.FOK, "14"),
])
def test_ioc_and_fok_map_to_kis_order_divisions_on_the_real_server(rsps, order_type, tif, division):
    seed_token(live=True)
    rsps.post(url(PATHS["order"], live=True), json=wire("order_accepted_real"))
    limit = Decimal("60000") if order_type == OrderType.LIMIT else None
    make_adapter(live=True).place_order(order_request(order_type=order_type, time_in_force=tif, limit_price=limit))
    assert json.loads(calls_to(rsps, PATHS["order"])[0].request.body)["ORD_DVSN"] == division


@pytest.mark.parametrize(("order_type", "tif"), [
    (OrderType.LIMIT, TimeInForce.IOC), (OrderType.LIMIT, TimeInForce.FOK),
    (OrderType.MARKET, TimeInForce.IOC), (OrderType.MARKET, TimeInForce.FOK),
])
def test_ioc_and_fok_are_refused_on_the_mock_server_before_sending(rsps, order_type, tif):
    seed_token()
    limit = Decimal("60000") if order_type == OrderType.LIMIT else None
    with pytest.raises(BrokerRejected, match="mock server .* does not offer"):
        make_adapter().place_order(order_request(order_type=order_type, time_in_force=tif, limit_price=limit))
    assert len(rsps.calls) == 0


def test_account_number_is_sent_as_cano_and_product_code_strings(rsps):
    seed_token()
    rsps.get(url(PATHS["price"]), json=wire("price"))
    rsps.get(url(PATHS["balance"]), json=wire("balance"))
    make_adapter(account_no="00012345-22").positions()
    params = dict(parse_qsl(urlsplit(calls_to(rsps, PATHS["balance"])[0].request.url).query))
    assert (params["CANO"], params["ACNT_PRDT_CD"]) == ("00012345", "22")


def test_malformed_account_number_is_credentials_refused():
    with pytest.raises(CredentialsRefused, match="12345678-01"):
        make_adapter(account_no="1234-5")


def test_every_call_carries_bearer_token_app_key_secret_tr_id_and_custtype(rsps):
    seed_token()
    rsps.get(url(PATHS["price"]), json=wire("price"), match=[responses.matchers.header_matcher({
        "authorization": f"Bearer {SEEDED_TOKEN}", "appkey": APP_KEY, "appsecret": APP_SECRET,
        "tr_id": "FHKST01010100", "custtype": "P"})])
    assert make_adapter().latest_price("005930") == Decimal("70100")


# --- placing: refused before any HTTP call -----------------------------------------------------------

@pytest.mark.parametrize("request_fields", [
    {"order_type": OrderType.STOP, "limit_price": None, "stop_price": Decimal("80000")},
    {"order_type": OrderType.STOP, "limit_price": None, "stop_price": Decimal("80000"),
     "stop_limit_price": Decimal("80500")},
], ids=["stop", "stop_limit"])
def test_stop_orders_are_rejected_before_any_http_call(rsps, request_fields):
    with pytest.raises(BrokerRejected, match="stop"):
        make_adapter().place_order(order_request(**request_fields))
    assert len(rsps.calls) == 0


def test_gtc_is_rejected_as_kis_orders_are_day_orders(rsps):
    with pytest.raises(BrokerRejected, match="day orders"):
        make_adapter().place_order(order_request(time_in_force=TimeInForce.GTC))
    assert len(rsps.calls) == 0


def test_fractional_quantity_is_rejected_before_any_http_call(rsps):
    with pytest.raises(BrokerRejected, match="whole shares"):
        make_adapter().place_order(order_request(qty=Decimal("1.5")))
    assert len(rsps.calls) == 0


def test_fractional_won_price_is_rejected_before_any_http_call(rsps):
    with pytest.raises(BrokerRejected, match="whole won"):
        make_adapter().place_order(order_request(limit_price=Decimal("60000.5")))
    assert len(rsps.calls) == 0


def test_bracket_order_is_rejected_before_any_http_call(rsps):
    bracket = Bracket(take_profit=Decimal("66000"), stop_loss=Decimal("57000"))
    with pytest.raises(BrokerRejected, match="bracket"):
        make_adapter().place_order(order_request(bracket=bracket))
    assert len(rsps.calls) == 0


# --- placing: the reply ------------------------------------------------------------------------------

def test_accepted_order_id_is_kst_date_and_unpadded_order_number_with_utc_time(rsps):
    seed_token(live=True)
    rsps.post(url(PATHS["order"], live=True), json=wire("order_accepted_real"))
    placed = make_adapter(live=True).place_order(order_request())
    assert placed.broker_order_id == "20260710-117057"
    assert placed.submitted_at == datetime(2026, 7, 10, 0, 35, 12, tzinfo=UTC)  # 09:35:12 KST
    assert placed.status == OrderStatus.ACCEPTED


def test_mock_reply_and_daily_inquiry_give_one_order_the_same_id(fake):
    placed = make_adapter().place_order(order_request())  # the mock reply's ODNO is unpadded
    listed = make_adapter().list_orders(scope=ListScope.OPEN)
    assert [o.broker_order_id for o in listed] == [placed.broker_order_id]


# --- placing: refusals -------------------------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["order_refused_insufficient_funds_real", "order_refused_insufficient_funds_mock"])
def test_funds_refusal_is_insufficient_funds(rsps, fixture):
    seed_token()
    rsps.post(url(PATHS["order"]), json=wire(fixture))
    with pytest.raises(InsufficientFunds, match="주문가능금액"):
        make_adapter().place_order(order_request())


def test_selling_more_than_held_is_insufficient_funds(fake):
    with pytest.raises(InsufficientFunds, match="주문가능수량"):
        make_adapter().place_order(order_request(side=Side.SELL))


@pytest.mark.parametrize(("fixture", "message"), [
    ("order_refused_unknown_symbol", "해당종목정보가 없습니다. (APBK0656)"),
    ("order_refused_market_closed_mock", "모의투자 장종료 입니다. (40580000)"),
], ids=["unknown-symbol", "mock-market-closed"])
def test_other_refusals_are_broker_rejected_with_kis_message(rsps, fixture, message):
    seed_token()
    rsps.post(url(PATHS["order"]), json=wire(fixture))
    with pytest.raises(BrokerRejected) as refused:
        make_adapter().place_order(order_request())
    assert message in refused.value.detail  # msg1 with KIS's trailing space stripped, then the code


# --- placing: lost answers are never resent ------------------------------------------------------------

@pytest.mark.parametrize("failure", [
    requests.exceptions.ReadTimeout("read timed out"),
    requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))),
    # What requests raises when the connection drops after the order went through a proxy.
    requests.exceptions.ProxyError(MaxRetryError(None, PATHS["order"], Urllib3ProxyError(
        "Unable to connect to proxy", ConnectionResetError(104, "Connection reset by peer")))),
], ids=["read-timeout", "connection-reset", "proxy-dropped-after-sending"])
def test_lost_order_answer_is_outcome_unknown_and_the_order_is_sent_once(rsps, failure):
    seed_token()
    rsps.post(url(PATHS["order"]), body=failure)
    with pytest.raises(BrokerOutcomeUnknown):
        make_adapter().place_order(order_request())
    assert len(calls_to(rsps, PATHS["order"])) == 1


@pytest.mark.parametrize("reply", [
    {"status": 502, "body": "<html><body><h1>502 Bad Gateway</h1></body></html>", "content_type": "text/html"},
    {"status": 200, "body": "<html><body>점검 중</body></html>", "content_type": "text/html"},
    {"status": 200, "body": '{"rt_cd": "0", "msg_cd": "APBK0013", "output": {"KRX_FWDG_',
     "content_type": "application/json"},
    {"status": 200, "body": '{"rt_cd": "0", "msg_cd": "APBK0013", "msg1": "", "output": {}}',
     "content_type": "application/json"},
    {"status": 500, "body": '{"rt_cd": "1", "msg_cd": "OPSQ9999", "msg1": "system error"}',
     "content_type": "application/json"},
], ids=["5xx-html", "200-html", "truncated-json", "no-order-number", "5xx-non-gateway-refusal"])
def test_garbled_or_5xx_order_reply_is_outcome_unknown_and_sent_once(rsps, reply):
    seed_token()
    rsps.post(url(PATHS["order"]), **reply)
    with pytest.raises(BrokerOutcomeUnknown):
        make_adapter().place_order(order_request())
    assert len(calls_to(rsps, PATHS["order"])) == 1


@pytest.mark.parametrize("failure", [
    requests.exceptions.ConnectTimeout("connect timed out"),
    requests.exceptions.ConnectionError(MaxRetryError(None, PATHS["order"], NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused"))),
    # What requests raises when the proxy refuses the connection (brokers.http.never_sent; KIS used
    # to count every ProxyError as "may have been placed").
    requests.exceptions.ProxyError(MaxRetryError(None, PATHS["order"], Urllib3ProxyError(
        "Unable to connect to proxy", NewConnectionError(
            None, "Failed to establish a new connection: [Errno 111] Connection refused")))),
], ids=["connect-timeout", "connection-refused", "proxy-refused"])
def test_order_that_never_left_is_broker_unavailable_not_outcome_unknown(rsps, failure):
    seed_token()
    rsps.post(url(PATHS["order"]), body=failure)
    with pytest.raises(BrokerUnavailable) as failed:
        make_adapter().place_order(order_request())
    assert not isinstance(failed.value, BrokerOutcomeUnknown)


def test_order_answered_with_a_redirect_is_outcome_unknown_and_the_redirect_is_not_followed(rsps):
    seed_token()
    elsewhere = url("/elsewhere")
    rsps.post(url(PATHS["order"]), status=307, headers={"Location": elsewhere})
    rsps.post(elsewhere, body=requests.exceptions.ConnectionError(MaxRetryError(None, "/elsewhere", NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused"))))
    with pytest.raises(BrokerOutcomeUnknown):
        make_adapter().place_order(order_request())
    assert [urlsplit(c.request.url).path for c in rsps.calls] == [PATHS["order"]]


def test_rate_limited_order_is_outcome_unknown_and_not_resent(rsps):
    """KIS does not document that an EGW00201 order was not processed: looked up, never resent."""
    seed_token()
    rsps.post(url(PATHS["order"]), status=500, json=wire("rate_limited"))
    with pytest.raises(BrokerOutcomeUnknown, match="EGW00201"):
        make_adapter().place_order(order_request())
    assert len(calls_to(rsps, PATHS["order"])) == 1


def test_expired_token_on_order_is_broker_unavailable_and_not_resent(rsps):
    seed_token()
    rsps.post(url(PATHS["order"]), status=500, json=wire("token_expired"))
    rsps.post(url(PATHS["token"]), json=wire("token_issued"))
    with pytest.raises(BrokerUnavailable) as failed:
        make_adapter().place_order(order_request())
    assert not isinstance(failed.value, BrokerOutcomeUnknown)
    assert len(calls_to(rsps, PATHS["order"])) == 1


def test_expired_token_on_order_replaces_the_shared_token_for_the_next_call(rsps):
    seed_token()
    rsps.post(url(PATHS["order"]), status=500, json=wire("token_expired"))
    rsps.post(url(PATHS["token"]), json=wire("token_issued"))
    with pytest.raises(BrokerUnavailable):
        make_adapter().place_order(order_request())
    assert KisAccessToken.objects.get().token == {"access_token": wire("token_issued")["access_token"]}


# --- reads: bounded retries ------------------------------------------------------------------------------

def test_read_timeout_is_retried_a_bounded_number_of_times_then_broker_unavailable(rsps, pauses):
    seed_token()
    rsps.get(url(PATHS["price"]), body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(BrokerUnavailable):
        make_adapter().latest_price("005930")
    assert len(calls_to(rsps, PATHS["price"])) == kis.READ_ATTEMPTS
    assert len(pauses) == kis.READ_ATTEMPTS - 1


def test_read_succeeds_when_a_retry_after_a_5xx_answers(rsps):
    seed_token()
    rsps.get(url(PATHS["price"]), status=503, body="<html>Service Unavailable</html>", content_type="text/html")
    rsps.get(url(PATHS["price"]), json=wire("price"))
    assert make_adapter().latest_price("005930") == Decimal("70100")


@pytest.mark.parametrize("body", ["<html><body>점검 중</body></html>", '{"rt_cd": "0", "output": {"stck_prpr": "70'],
                         ids=["html", "truncated-json"])
def test_unreadable_read_reply_is_broker_unavailable(rsps, body):
    seed_token()
    rsps.get(url(PATHS["price"]), body=body)
    with pytest.raises(BrokerUnavailable):
        make_adapter().latest_price("005930")


def test_rate_limited_read_backs_off_and_retries(rsps, pauses):
    seed_token()
    rsps.get(url(PATHS["price"]), status=500, json=wire("rate_limited"))
    rsps.get(url(PATHS["price"]), json=wire("price"))
    assert make_adapter().latest_price("005930") == Decimal("70100")
    assert len(pauses) == 1


def test_client_error_on_read_is_broker_unavailable_without_retry(rsps):
    seed_token()
    rsps.get(url(PATHS["price"]), status=404, body="Not Found")
    with pytest.raises(BrokerUnavailable):
        make_adapter().latest_price("005930")
    assert len(calls_to(rsps, PATHS["price"])) == 1


# --- the shared OAuth token --------------------------------------------------------------------------------

def test_two_adapters_built_by_the_registry_issue_one_token(fake):
    user = get_user_model().objects.create_user(username="kis-token-sharer")
    connection = BrokerAccount.objects.create(user=user, asset_class=AssetClass.KR_EQUITY, exchange=Exchange.KIS,
                                              environment=Environment.PAPER, credentials=credentials())
    build_adapter(connection).latest_price("005930")
    build_adapter(connection).latest_price("005930")
    assert len(fake.calls("token")) == 1


def test_stored_fresh_token_is_used_without_issuing(fake):
    seed_token(fake=fake)
    make_adapter().latest_price("005930")
    assert fake.calls("token") == []


def test_expired_stored_token_is_reissued_once_for_every_worker(fake):
    seed_token("yesterdays-token", valid_for=timedelta(hours=-1))
    make_adapter().latest_price("005930")
    make_adapter().latest_price("005930")
    assert len(fake.calls("token")) == 1
    assert KisAccessToken.objects.get().token["access_token"] in fake.tokens


def test_token_within_ten_minutes_of_expiry_is_renewed_ahead_of_time(fake):
    seed_token(valid_for=timedelta(minutes=5), fake=fake)
    make_adapter().latest_price("005930")
    assert len(fake.calls("token")) == 1


def test_token_expiry_is_read_as_seoul_wall_clock_time(rsps):
    rsps.post(url(PATHS["token"]), json=wire("token_issued"))  # access_token_token_expired 2026-07-11 09:15:02
    rsps.get(url(PATHS["price"]), json=wire("price"))
    make_adapter().latest_price("005930")
    assert KisAccessToken.objects.get().expires_at == datetime(2026, 7, 11, 0, 15, 2, tzinfo=UTC)


def test_expired_token_error_on_a_read_reissues_once_and_retries(fake):
    seed_token()  # still fresh in our row, but KIS says it expired
    fake.accept_token(SEEDED_TOKEN, expires_at=timezone.now() - timedelta(minutes=1))
    assert make_adapter().latest_price("005930") == Decimal("70000")
    assert len(fake.calls("token")) == 1
    assert len(fake.calls("price")) == 2


def test_invalid_token_error_on_a_read_reissues_once_and_retries(fake):
    seed_token("a-token-kis-never-issued")
    assert make_adapter().latest_price("005930") == Decimal("70000")
    assert len(fake.calls("token")) == 1


def test_token_refused_again_after_reissue_is_broker_unavailable(rsps):
    seed_token()
    rsps.get(url(PATHS["price"]), status=500, json=wire("token_expired"))
    rsps.post(url(PATHS["token"]), json=wire("token_issued"))
    with pytest.raises(BrokerUnavailable, match="EGW00123"):
        make_adapter().latest_price("005930")
    assert len(calls_to(rsps, PATHS["token"])) == 1
    assert len(calls_to(rsps, PATHS["price"])) == 2


def test_token_already_replaced_by_another_worker_is_used_without_issuing(fake):
    seed_token("old-token", fake=fake)
    adapter = make_adapter()
    adapter.latest_price("005930")  # remembers old-token
    KisAccessToken.objects.update(token={"access_token": "new-token"})  # another worker renewed it
    fake.accept_token("new-token", expires_at=timezone.now() + timedelta(hours=12))
    fake.accept_token("old-token", expires_at=timezone.now() - timedelta(seconds=1))
    assert adapter.latest_price("005930") == Decimal("70000")
    assert fake.calls("token") == []
    assert fake.calls("price")[-1].headers["authorization"] == "Bearer new-token"


def test_throttled_token_issuance_is_broker_unavailable(rsps):
    rsps.post(url(PATHS["token"]), status=403, json=wire("token_throttled"))
    with pytest.raises(BrokerUnavailable, match="one access token a minute"):
        make_adapter().latest_price("005930")
    assert calls_to(rsps, PATHS["price"]) == []


def test_bad_app_key_is_credentials_refused(rsps):
    rsps.post(url(PATHS["token"]), status=403, json=wire("token_bad_app_key"))
    with pytest.raises(CredentialsRefused):
        make_adapter().latest_price("005930")


# --- logging -----------------------------------------------------------------------------------------------

def test_each_broker_call_logs_one_line_with_outcome_and_latency(rsps, caplog):
    seed_token()
    rsps.get(url(PATHS["price"]), json=wire("price"))
    with caplog.at_level(logging.INFO, logger="brokers.adapters.kis"):
        make_adapter().latest_price("005930")
    lines = [r for r in caplog.records if r.name == "brokers.adapters.kis"]
    assert len(lines) == 1
    assert "rt_cd=0" in lines[0].outcome and isinstance(lines[0].latency_ms, int)


def test_logs_never_contain_keys_token_or_account_number(fake, caplog):
    with caplog.at_level(logging.DEBUG):
        adapter = make_adapter()
        adapter.place_order(order_request())
        adapter.positions()
    token = KisAccessToken.objects.get().token["access_token"]
    assert caplog.records
    for record in caplog.records:
        text = record.getMessage() + " " + " ".join(str(v) for v in vars(record).values())
        for secret in (APP_KEY, APP_SECRET, token, ACCOUNT_NO.split("-")[0]):
            assert secret not in text


# --- the daily inquiry: status, paging, ids ------------------------------------------------------------------

@pytest.mark.parametrize(("broker_order_id", "status", "filled", "avg"), [
    ("20260710-101", OrderStatus.ACCEPTED, "0", None),
    ("20260710-102", OrderStatus.FILLED, "10", "69900"),
    ("20260710-103", OrderStatus.PARTIALLY_FILLED, "4", "70000"),
    ("20260710-104", OrderStatus.CANCELED, "0", None),  # canceled by the row 105 pointing back at it
    ("20260710-106", OrderStatus.CANCELED, "0", None),  # canceled, flagged on its own row
    ("20260710-107", OrderStatus.REJECTED, "0", None),
    ("20260710-108", OrderStatus.CANCELED, "4", "70000"),  # partly filled, nothing left working
    ("20260709-109", OrderStatus.EXPIRED, "0", None),  # a day order of yesterday, never filled
    ("20260710-110", OrderStatus.FILLED, "10", "70100"),
])
def test_daily_inquiry_row_maps_to_status_and_fills(rsps, broker_order_id, status, filled, avg):
    seed_token()
    rsps.get(url(PATHS["daily"]), json=wire("daily_ccld_statuses"))
    got = make_adapter().get_order(broker_order_id)
    assert (got.status, got.filled_qty, got.avg_fill_price) == (status, Decimal(filled),
                                                                Decimal(avg) if avg else None)


def test_daily_inquiry_row_maps_side_type_prices_and_kst_time(rsps):
    seed_token()
    rsps.get(url(PATHS["daily"]), json=wire("daily_ccld_statuses"))
    limit, market = make_adapter().get_order("20260710-101"), make_adapter().get_order("20260710-110")
    assert (limit.side, limit.order_type, limit.limit_price, limit.qty) == \
        (Side.BUY, OrderType.LIMIT, Decimal("70000"), Decimal("10"))
    assert (market.side, market.order_type, market.limit_price) == (Side.SELL, OrderType.MARKET, None)
    assert limit.submitted_at == datetime(2026, 7, 10, 0, 35, 12, tzinfo=UTC)


def test_cancel_rows_are_not_listed_as_orders_of_their_own(rsps):
    seed_token()
    rsps.get(url(PATHS["daily"]), json=wire("daily_ccld_statuses"))
    ids = {o.broker_order_id for o in make_adapter().list_orders()}
    assert "20260710-104" in ids and "20260710-105" not in ids


def test_daily_inquiry_follows_continuation_pages(rsps):
    seed_token()
    first, second = wire("daily_ccld_page1"), wire("daily_ccld_page2")

    def daily(request):
        params = dict(parse_qsl(urlsplit(request.url).query, keep_blank_values=True))
        if request.headers.get("tr_cont") == "N" and params["CTX_AREA_NK100"] == first["ctx_area_nk100"] \
                and params["CTX_AREA_FK100"] == first["ctx_area_fk100"]:
            return 200, {"tr_cont": "D"}, json.dumps(second)
        return 200, {"tr_cont": "M"}, json.dumps(first)

    rsps.add_callback(responses.GET, url(PATHS["daily"]), callback=daily)
    since = datetime(2026, 7, 10, tzinfo=KST)
    assert [o.broker_order_id for o in make_adapter().list_orders(since=since)] == ["20260710-201", "20260710-202"]


def test_orders_older_than_three_months_are_read_with_the_older_inquiry_tr(fake):
    make_adapter().list_orders(since=timezone.now() - timedelta(days=120))
    assert {c.headers["tr_id"] for c in fake.calls("daily")} == {"VTSC9215R", "VTTC0081R"}


def test_malformed_order_id_is_order_not_found_without_http_call(rsps):
    with pytest.raises(OrderNotFound):
        make_adapter().get_order("0000117057")
    assert len(rsps.calls) == 0


def test_open_scope_lists_only_working_orders(fake):
    adapter = make_adapter()
    resting = adapter.place_order(order_request())
    adapter.place_order(order_request(order_type=OrderType.MARKET, limit_price=None))
    assert [o.broker_order_id for o in adapter.list_orders(scope=ListScope.OPEN)] == [resting.broker_order_id]


# --- cancel ----------------------------------------------------------------------------------------------------

def test_cancel_sends_the_branch_and_original_order_number_from_the_inquiry(fake):
    adapter = make_adapter()
    placed = adapter.place_order(order_request())
    adapter.cancel_order(placed.broker_order_id, symbol="005930")
    [cancel] = fake.calls("cancel")
    assert cancel.headers["tr_id"] == "VTTC0013U"
    assert (cancel.body["KRX_FWDG_ORD_ORGNO"], cancel.body["ORGN_ODNO"], cancel.body["RVSE_CNCL_DVSN_CD"],
            cancel.body["QTY_ALL_ORD_YN"]) == (ORGNO, fake.rows[0]["odno"], "02", "Y")


def test_cancel_of_a_filled_order_is_broker_rejected_without_a_cancel_call(fake):
    adapter = make_adapter()
    filled = adapter.place_order(order_request(order_type=OrderType.MARKET, limit_price=None))
    with pytest.raises(BrokerRejected, match="already filled"):
        adapter.cancel_order(filled.broker_order_id)
    assert fake.calls("cancel") == []


def test_kis_refusing_a_cancel_is_broker_rejected(rsps):
    seed_token()
    rsps.get(url(PATHS["daily"]), json=wire("daily_ccld_statuses"))
    rsps.post(url(PATHS["cancel"]), json=wire("cancel_nothing_left_mock"))
    with pytest.raises(BrokerRejected, match="40330000"):
        make_adapter().cancel_order("20260710-101")


def test_cancel_of_an_unknown_order_is_order_not_found(fake):
    with pytest.raises(OrderNotFound):
        make_adapter().cancel_order("20260710-424242")
    assert fake.calls("cancel") == []


def test_cancel_without_answer_is_broker_unavailable(rsps):
    seed_token()
    rsps.get(url(PATHS["daily"]), json=wire("daily_ccld_statuses"))
    rsps.post(url(PATHS["cancel"]), body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(BrokerUnavailable):
        make_adapter().cancel_order("20260710-101")
    assert len(calls_to(rsps, PATHS["cancel"])) == 1


# --- positions, account, price ------------------------------------------------------------------------------

def test_positions_skip_holdings_sold_out_today(rsps):
    seed_token()
    rsps.get(url(PATHS["balance"]), json=wire("balance"))
    assert [p.symbol for p in make_adapter().positions()] == ["005930"]


def test_position_numbers_are_decimals_and_pnl_percent_is_a_fraction(rsps):
    seed_token()
    rsps.get(url(PATHS["balance"]), json=wire("balance"))
    [held] = make_adapter().positions()
    assert (held.qty, held.avg_entry_price, held.current_price, held.unrealized_pnl, held.unrealized_pnl_pct,
            held.currency, held.side) == (Decimal("10"), Decimal("68500"), Decimal("70000"), Decimal("15000"),
                                          Decimal("0.0219"), "KRW", "LONG")


def test_account_reads_totals_from_output2_and_buying_power_from_the_amount_without_margin(rsps):
    seed_token()
    rsps.get(url(PATHS["balance"]), json=wire("balance"))
    rsps.get(url(PATHS["psbl"]), json=wire("psbl_order"))
    acct = make_adapter().account()
    # psbl_order.json: ord_psbl_cash 12,315,000 includes margin; nrcvb_buy_amt 9,315,000 does not.
    assert (acct.equity, acct.cash, acct.buying_power, acct.last_equity, acct.currency) == (
        Decimal("10015000"), Decimal("9315000"), Decimal("9315000"), Decimal("10000000"), "KRW")
    assert acct.as_of.utcoffset() == timedelta(0)
    psbl = dict(parse_qsl(urlsplit(calls_to(rsps, PATHS["psbl"])[0].request.url).query, keep_blank_values=True))
    assert psbl["PDNO"] == "005930"


def test_latest_price_of_an_unknown_symbol_is_broker_rejected(fake):
    with pytest.raises(BrokerRejected, match="APBK0656"):
        make_adapter().latest_price("999999")


# --- find_order: matching a lost placement -------------------------------------------------------------------

def _row_at(fake: FakeKis, moment: datetime, *, price: str = "60000", division: str = "00", side: str = "02",
            qty: str = "10") -> dict:
    return fake.add_row(symbol="005930", side=side, division=division, qty=Decimal(qty), unit_price=price,
                        ord_tmd=kst_clock(moment))


def test_find_order_returns_the_one_order_matching_symbol_side_qty_and_price(fake):
    submitted = timezone.now() - timedelta(seconds=90)
    _row_at(fake, submitted + timedelta(seconds=1), price="60100")
    _row_at(fake, submitted + timedelta(seconds=1), side="01")
    _row_at(fake, submitted + timedelta(seconds=1), qty="11")
    match = _row_at(fake, submitted + timedelta(seconds=1))
    found = make_adapter().find_order(order_request(), submitted_at=submitted)
    assert found is not None and found.broker_order_id == f"20260710-{match['odno'].lstrip('0')}"


def test_find_order_matches_a_market_order_by_division_not_by_price(fake):
    submitted = timezone.now() - timedelta(seconds=90)
    match = _row_at(fake, submitted + timedelta(seconds=2), price="0", division="01")
    found = make_adapter().find_order(order_request(order_type=OrderType.MARKET, limit_price=None),
                                      submitted_at=submitted)
    assert found is not None and found.broker_order_id.endswith(match["odno"].lstrip("0"))


def test_find_order_without_a_match_at_61_seconds_is_not_shown_now_never_absent(fake):
    # SPEC.md: a lookup that finds nothing is no proof; KIS has no client id to re-send under.
    submitted = timezone.now() - timedelta(seconds=61)
    adapter = make_adapter()
    assert adapter.find_order(order_request(), submitted_at=submitted) is None
    assert adapter.client_ids is False
    assert adapter.absence_settled(submitted_at=submitted, now=timezone.now()) is False


def test_find_order_with_two_matches_cannot_decide(fake):
    submitted = timezone.now() - timedelta(seconds=90)
    _row_at(fake, submitted + timedelta(seconds=1))
    _row_at(fake, submitted + timedelta(seconds=3))
    with pytest.raises(BrokerUnavailable, match="2 KIS orders match"):
        make_adapter().find_order(order_request(), submitted_at=submitted)


def test_find_order_ignores_a_twin_order_placed_before_the_lost_one(fake):
    submitted = timezone.now() - timedelta(seconds=90)
    _row_at(fake, submitted - timedelta(minutes=5))
    with time_machine.travel(datetime(2026, 7, 10, 16, 5, tzinfo=KST)):  # the day's inquiry is final
        assert make_adapter().find_order(order_request(), submitted_at=submitted) is None


def test_find_order_of_a_stop_order_is_none_without_http_call(rsps):
    stop = order_request(order_type=OrderType.STOP, limit_price=None, stop_price=Decimal("80000"))
    assert make_adapter().find_order(stop, submitted_at=timezone.now() - timedelta(minutes=5)) is None
    assert len(rsps.calls) == 0


# --- issue 11: status from quantities (recorded rows in daily_ccld_quantities.json) ----------------------

@pytest.mark.parametrize(("broker_order_id", "status", "filled", "avg"), [
    ("20260710-301", OrderStatus.PARTIALLY_FILLED, "4", "70000"),  # cancel pending: the rest can still fill
    ("20260710-303", OrderStatus.PARTIALLY_FILLED, "4", "70000"),  # cancel refused (rjct_qty on the cancel row)
    ("20260710-305", OrderStatus.CANCELED, "4", "70000"),  # cancel confirmed for the 6 left
    ("20260710-307", OrderStatus.CANCELED, "0", None),  # IOC limit that did not fill: rmn_qty 0, no cancel row
    ("20260710-308", OrderStatus.CANCELED, "0", None),  # FOK market that did not fill
    ("20260710-309", OrderStatus.FILLED, "10", "70350"),  # amended in the KIS app: 3 @ 70000 + 7 @ 70500
    ("20260710-311", OrderStatus.PARTIALLY_FILLED, "5", "70200"),  # amended, the amendment partly filled
    ("20260710-313", OrderStatus.PARTIALLY_FILLED, "4", "70000"),  # cncl_yn Y on the order, nothing confirmed
])
def test_status_is_derived_from_the_quantities_of_the_order_and_its_linked_rows(rsps, broker_order_id, status,
                                                                                 filled, avg):
    seed_token()
    rsps.get(url(PATHS["daily"]), json=wire("daily_ccld_quantities"))
    got = make_adapter().get_order(broker_order_id)
    assert (got.status, got.filled_qty, got.avg_fill_price) == (status, Decimal(filled),
                                                                Decimal(avg) if avg else None)


def test_amendment_and_cancel_rows_are_not_listed_as_orders_of_their_own(rsps):
    seed_token()
    rsps.get(url(PATHS["daily"]), json=wire("daily_ccld_quantities"))
    ids = {o.broker_order_id.split("-")[1] for o in make_adapter().list_orders()}
    assert ids == {"301", "303", "305", "307", "308", "309", "311", "313"}


def test_a_partly_filled_order_with_a_pending_cancel_stays_open(rsps):
    seed_token()
    rsps.get(url(PATHS["daily"]), json=wire("daily_ccld_quantities"))
    open_ids = {o.broker_order_id for o in make_adapter().list_orders(scope=ListScope.OPEN)}
    assert {"20260710-301", "20260710-303", "20260710-313"} <= open_ids and "20260710-305" not in open_ids


# --- issue 11: paging restart, EGW00103 lock-out, EGW00201 on reads and cancels -----------------------------

def _paged_daily(rsps, *, changed_times: int) -> list[str]:
    """page 1, then page 2 answers "data changed" `changed_times` times before it is served."""
    first, second = wire("daily_ccld_page1"), wire("daily_ccld_page2")
    served = []

    def daily(request):
        params = dict(parse_qsl(urlsplit(request.url).query, keep_blank_values=True))
        if request.headers.get("tr_cont") == "N" and params["CTX_AREA_NK100"] == first["ctx_area_nk100"]:
            if served.count("changed") < changed_times:
                served.append("changed")
                return 200, {}, json.dumps(wire("paging_data_changed"), ensure_ascii=False)
            served.append("page2")
            return 200, {"tr_cont": "D"}, json.dumps(second)
        served.append("page1")
        return 200, {"tr_cont": "M"}, json.dumps(first)

    rsps.add_callback(responses.GET, url(PATHS["daily"]), callback=daily)
    return served


def test_pages_that_changed_while_read_are_read_again_from_the_first_page(rsps):
    seed_token()
    served = _paged_daily(rsps, changed_times=1)
    orders = make_adapter().list_orders(since=datetime(2026, 7, 10, tzinfo=KST))
    assert served == ["page1", "changed", "page1", "page2"]
    assert [o.broker_order_id for o in orders] == ["20260710-201", "20260710-202"]  # each row once


def test_pages_that_keep_changing_are_broker_unavailable_after_bounded_restarts(rsps, equity_orders):
    equity_orders.KIS_PAGING_RESTARTS = 2
    seed_token()
    served = _paged_daily(rsps, changed_times=100)
    with pytest.raises(BrokerUnavailable, match="kept changing"):
        make_adapter().list_orders(since=datetime(2026, 7, 10, tzinfo=KST))
    assert served.count("changed") == 3


def test_egw00103_after_repeated_token_requests_is_a_lock_out_not_refused_keys(rsps):
    rsps.post(url(PATHS["token"]), status=403, json=wire("token_throttled"))
    with pytest.raises(BrokerUnavailable):
        make_adapter().latest_price("005930")
    rsps.replace(responses.POST, url(PATHS["token"]), status=403, json=wire("token_bad_app_key"))
    with pytest.raises(BrokerUnavailable, match="temporarily refuses token requests") as failed:
        make_adapter().latest_price("005930")
    assert not isinstance(failed.value, CredentialsRefused)


def test_egw00103_for_a_key_kis_issued_tokens_to_before_is_a_lock_out(rsps):
    seed_token(valid_for=timedelta(minutes=-5))  # an earlier, now expired token of this app key
    rsps.post(url(PATHS["token"]), status=403, json=wire("token_bad_app_key"))
    with pytest.raises(BrokerUnavailable, match="EGW00103") as failed:
        make_adapter().latest_price("005930")
    assert not isinstance(failed.value, CredentialsRefused)


def test_rate_refused_read_is_retried_with_growing_backoff(rsps, pauses):
    seed_token()
    for _ in range(3):
        rsps.get(url(PATHS["price"]), status=500, json=wire("rate_limited"))
    rsps.get(url(PATHS["price"]), json=wire("price"))
    assert make_adapter().latest_price("005930") > 0
    assert pauses == [0.5, 1.0, 2.0]


def test_rate_refused_cancel_is_sent_again_after_a_backoff(fake, rsps, pauses):
    placed = make_adapter().place_order(order_request())
    refusals = iter([True])

    def cancel_refused_once(request):
        if next(refusals, False):  # the gateway's per-second refusal, once
            return 500, {}, json.dumps(wire("rate_limited"), ensure_ascii=False)
        return fake._guarded(fake._cancel)(request)

    rsps.remove(responses.POST, url(PATHS["cancel"]))
    rsps.add_callback(responses.POST, url(PATHS["cancel"]), callback=cancel_refused_once)
    make_adapter().cancel_order(placed.broker_order_id)
    assert len(calls_to(rsps, PATHS["cancel"])) == 2 and pauses[-1] == 0.5
    assert make_adapter().get_order(placed.broker_order_id).status == OrderStatus.CANCELED


# --- issue 11: absence is settled by the KRX close, not by a time window -------------------------------------

def test_absence_is_not_settled_before_the_krx_close_and_is_after_it():
    adapter = make_adapter()
    submitted = datetime(2026, 7, 10, 10, 0, tzinfo=KST)
    assert not adapter.absence_settled(submitted_at=submitted, now=submitted + timedelta(seconds=61))
    assert not adapter.absence_settled(submitted_at=submitted, now=datetime(2026, 7, 10, 15, 35, tzinfo=KST))
    assert adapter.absence_settled(submitted_at=submitted, now=datetime(2026, 7, 10, 16, 5, tzinfo=KST))


def test_a_lost_order_found_nowhere_is_undecided_all_session_and_absent_after_the_close(fake):
    submitted = timezone.now()
    adapter = make_adapter()
    with time_machine.travel(datetime(2026, 7, 10, 15, 0, tzinfo=KST)):
        assert adapter.find_order(order_request(), submitted_at=submitted) is None
        assert not adapter.absence_settled(submitted_at=submitted, now=timezone.now())
    with time_machine.travel(datetime(2026, 7, 10, 16, 5, tzinfo=KST)):
        assert adapter.find_order(order_request(), submitted_at=submitted) is None
        assert adapter.absence_settled(submitted_at=submitted, now=timezone.now())


def test_a_lost_order_that_shows_late_in_the_inquiry_is_found_hours_later(fake):
    submitted = timezone.now()
    late = _row_at(fake, submitted + timedelta(minutes=3))  # KIS's receipt time, minutes after our send
    with time_machine.travel(datetime(2026, 7, 10, 14, 0, tzinfo=KST)):
        found = make_adapter().find_order(order_request(), submitted_at=submitted)
    assert found is not None and found.broker_order_id.endswith(late["odno"].lstrip("0"))


def test_kis_adapter_says_it_has_no_client_ids():
    assert KisAdapter.client_ids is False


# --- issue 11: pacing --------------------------------------------------------------------------------------

def test_mock_requests_of_one_app_key_are_paced_to_two_a_second(fake, pacing_clock):
    adapter = make_adapter()
    starts = []
    for _ in range(6):
        adapter.latest_price("005930")
        starts.append(pacing_clock.now())
    assert all(later - earlier >= 0.5 for earlier, later in zip(starts, starts[1:]))


def test_real_server_budget_is_twenty_a_second(equity_orders):
    assert make_adapter(live=True)._pacer.rate == equity_orders.KIS_REAL_REQUESTS_PER_SECOND == 20
    assert make_adapter()._pacer.rate == equity_orders.KIS_MOCK_REQUESTS_PER_SECOND == 2


def test_egw00103_for_a_key_unused_for_days_is_credentials_refused(rsps):
    seed_token(valid_for=timedelta(days=-3))
    rsps.post(url(PATHS["token"]), status=403, json=wire("token_bad_app_key"))
    with pytest.raises(CredentialsRefused):
        make_adapter().latest_price("005930")
