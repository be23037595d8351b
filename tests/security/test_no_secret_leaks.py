"""No secret leaves the service: not in an API response, a log line (DEBUG, SQL included), an
audit row, the database as stored, or a mail.

Each test drives real flows through the API against the real adapters and the wire fakes of
tests/brokers/venues: connecting (refused keys first), placing, reading, canceling, and the
failures (broker errors, lost connections whose messages carry the request URL, keys revoked at
the broker). Then every place a secret could land is searched for every secret value: the
credentials, the KIS account number, KIS access tokens, Upbit's signed request JWTs, our own
JWTs and the user's password, the Fernet keys and SECRET_KEY.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import responses
import time_machine
from django.core import mail

from audit.models import BrokerOrderEvent, EventType
from audit.services import record_order_event
from brokers.adapters import kis as kis_adapter
from brokers.adapters import upbit as upbit_adapter
from brokers.models import BrokerAccount
from tests.brokers.venues.alpaca import DATA_URL, LIVE_URL, PAPER_URL, FakeAlpaca
from tests.brokers.venues.kis import PATHS as KIS_PATHS
from tests.brokers.venues.kis import FakeKis
from tests.brokers.venues.upbit import FakeUpbit
from tests.equity.test_gates import set_flag
from tests.factories import TraderProfileFactory
from tests.security.faults import GATEWAY_TIMEOUT, Faults, connection_lost, read_timeout

pytestmark = pytest.mark.django_db

ALPACA = {"api_key": "PKLEAKCHECK7Q2W9E4R1T", "secret_key": "alpacaSecretLeakCheck8f3k2j5h7g1d9s6a4"}
ALPACA_ACCOUNT_NUMBER = "PA2Z1S6JX8KQ"  # in tests/wire/alpaca/account.json
KIS = {"app_key": "PSleakCheckAppKey4f8e2d6c1b9a7e3d5c0", "app_secret": "kisAppSecretLeakCheck" + "Zx9" * 50,
       "account_no": "73920418-01"}
UPBIT = {"access_key": "upbitAccessLeakCheck3n8m2k7j4h1g5f9d6s0a",
         "secret_key": "upbitSecretLeakCheck6y2u8i4o1p7l3k9j5h0g"}
KST = ZoneInfo("Asia/Seoul")


def secrets_of(evidence, exchange: str, credentials: dict, *, refused: bool = False) -> None:
    for name, value in credentials.items():
        evidence.secret(f"{'refused ' if refused else ''}{exchange} {name}", value)


def connect(client, *, exchange: str, asset_class: str, environment: str, credentials: dict, **extra):
    return client.post("/api/brokers/accounts", {"exchange": exchange, "asset_class": asset_class,
                                                  "environment": environment, "credentials": credentials},
                       format="json", **extra)


def place(client, **body):
    return client.post("/api/equity/orders", body, format="json")


def reads(client, asset_class: str, order_id: str, *, live: bool = False) -> None:
    """Every read route once: the order, the list, positions, account."""
    q = {"asset_class": asset_class, "live_mode": str(live).lower()}
    assert client.get(f"/api/equity/orders/{order_id}", q).status_code == 200
    assert client.get("/api/equity/orders", q).status_code == 200
    assert client.get("/api/equity/positions", q).status_code == 200
    assert client.get("/api/equity/account", q).status_code == 200


def cancel(client, order_id: str, asset_class: str, *, live: bool = False):
    return client.delete(f"/api/equity/orders/{order_id}?asset_class={asset_class}&live_mode={str(live).lower()}")


def test_the_search_finds_a_secret_wherever_it_was_left(evidence, user):
    """The harness itself: a secret put in a log line, a response and an audit row is found in all three."""
    client = evidence.client(user)
    evidence.secret("planted", "planted-secret-value-0001")
    logging.getLogger("brokers.adapters.alpaca").debug("oops %s", "planted-secret-value-0001")
    client.get("/api/equity/orders", {"asset_class": "planted-secret-value-0001"})  # echoed in the 400
    record_order_event(user_id=user.pk, event_type=EventType.REJECTED, error_detail="planted-secret-value-0001")
    leaks = evidence.leaks()
    assert any(leak.startswith("planted in log brokers.adapters.alpaca") for leak in leaks), leaks
    assert any(leak.startswith("planted in response GET /api/equity/orders 400") for leak in leaks), leaks
    assert "planted in audit rows" in leaks and "planted in database table broker_order_events" in leaks
    with pytest.raises(AssertionError, match="planted"):
        evidence.assert_no_leaks()


def test_simulator_flows_leak_nothing(evidence, user, quotes):
    client = evidence.client(user)
    made = connect(client, exchange="sim", asset_class="crypto", environment="paper",
                   credentials={"starting_cash": "50000"})
    assert made.status_code == 201, made.content
    resting = place(client, asset_class="crypto", symbol="BTC/USD", side="buy", qty=0.01, order_type="limit",
                    limit_price=40000)
    assert resting.status_code == 201, resting.content
    filled = place(client, asset_class="crypto", symbol="BTC/USD", side="buy", qty=0.01, order_type="market")
    assert filled.status_code == 201, filled.content
    reads(client, "crypto", resting.json()["order_id"])
    assert cancel(client, resting.json()["order_id"], "crypto").status_code == 204
    assert cancel(client, filled.json()["order_id"], "crypto").status_code == 422
    assert place(client, asset_class="crypto", symbol="BTC/USD", side="sell", qty=5, order_type="market") \
        .status_code == 422  # no shorting
    assert place(client, asset_class="crypto", symbol="BTC/USD", side="buy", qty=-1, order_type="market") \
        .status_code == 400
    assert client.delete(f"/api/brokers/accounts/{made.json()['id']}").status_code == 204
    evidence.assert_no_leaks()


# --- Alpaca ------------------------------------------------------------------------------------------

@pytest.fixture
def alpaca(settings, equity_orders):
    equity_orders.ALPACA_PAPER_URL, equity_orders.ALPACA_LIVE_URL, equity_orders.ALPACA_DATA_URL = PAPER_URL, LIVE_URL, DATA_URL
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = FakeAlpaca(prices={"BTC/USD": Decimal("50000")}, **ALPACA)
        faults = Faults(mock)
        fake.install(faults, base_url=PAPER_URL)
        yield fake, faults


def btc(**extra):
    return {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.01, "order_type": "limit",
            "limit_price": 40000, **extra}


def test_alpaca_flows_and_failures_leak_nothing(evidence, user, alpaca):
    fake, faults = alpaca
    client = evidence.client(user)
    wrong = {"api_key": "PKREFUSEDKEY00000042", "secret_key": "refusedAlpacaSecret0000000000000000042"}
    secrets_of(evidence, "alpaca", ALPACA)
    secrets_of(evidence, "alpaca", wrong, refused=True)
    evidence.secret("alpaca account number", ALPACA_ACCOUNT_NUMBER)

    refused = connect(client, exchange="alpaca", asset_class="crypto", environment="paper", credentials=wrong)
    assert refused.status_code == 400 and "credentials" in refused.json()["errors"]
    browsable = connect(client, exchange="alpaca", asset_class="crypto", environment="paper", credentials=wrong,
                        HTTP_ACCEPT="text/html")  # the browsable API renders the request back as a form
    assert browsable.status_code == 400
    made = connect(client, exchange="alpaca", asset_class="crypto", environment="paper", credentials=ALPACA)
    assert made.status_code == 201, made.content
    assert made.json()["key_hint"] == ALPACA["api_key"][-4:]  # all the API ever shows of a key

    resting = place(client, **btc())
    assert resting.status_code == 201, resting.content
    filled = place(client, **btc(order_type="market", limit_price=None))
    assert filled.status_code == 201, filled.content
    reads(client, "crypto", resting.json()["order_id"])
    assert cancel(client, resting.json()["order_id"], "crypto").status_code == 204
    assert cancel(client, filled.json()["order_id"], "crypto").status_code == 422

    faults.fail_next("POST", "/v2/orders", GATEWAY_TIMEOUT)  # not found by our client id: re-sent under it
    assert place(client, **btc()).status_code == 201
    faults.fail_next("POST", "/v2/orders", read_timeout, after=True)  # placed, the reply lost: found
    assert place(client, **btc()).status_code == 201
    faults.fail_next("GET", "/v2/account", connection_lost, times=2)
    assert client.get("/api/equity/account", {"asset_class": "crypto"}).status_code == 502
    faults.fail_next("GET", "/v2/positions", (200, {}, '{"unexpected": "shape"}'), times=2)
    assert client.get("/api/equity/positions", {"asset_class": "crypto"}).status_code == 502

    fake.api_key = "PKROTATEDATTHEBROKER01"  # the keys are revoked at Alpaca
    assert place(client, **btc()).status_code == 403
    assert BrokerAccount.objects.get(user=user).status == "invalid"
    assert place(client, **btc()).status_code == 403
    evidence.assert_no_leaks()


# --- KIS ------------------------------------------------------------------------------------------------

@pytest.fixture
def seoul_trading_morning():
    with time_machine.travel(datetime(2026, 7, 10, 10, 0, tzinfo=KST), tick=True) as traveller:
        yield traveller


@pytest.fixture
def kis(monkeypatch, seoul_trading_morning):
    monkeypatch.setattr(kis_adapter, "_pause", lambda seconds: None)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = FakeKis(prices={"005930": Decimal("70000")}, **KIS)
        faults = Faults(mock)
        fake.install(faults)
        yield fake, faults, seoul_trading_morning


def samsung(**extra):
    return {"asset_class": "kr_equity", "symbol": "005930", "side": "buy", "qty": 10, "order_type": "limit",
            "limit_price": 60000, **extra}


def test_kis_flows_and_failures_leak_nothing(evidence, user, kis):
    fake, faults, clock = kis
    client = evidence.client(user)
    wrong = dict(KIS, app_secret="refusedKisSecret" + "Q7" * 60)
    secrets_of(evidence, "kis", KIS)
    evidence.secret("kis refused app_secret", wrong["app_secret"])
    evidence.secret("kis account number without its dash", KIS["account_no"].replace("-", ""))
    evidence.secret("kis account number (CANO)", KIS["account_no"].split("-")[0])

    refused = connect(client, exchange="kis", asset_class="kr_equity", environment="paper", credentials=wrong)
    assert refused.status_code == 400 and "credentials" in refused.json()["errors"], refused.content
    made = connect(client, exchange="kis", asset_class="kr_equity", environment="paper", credentials=KIS)
    assert made.status_code == 201, made.content

    resting = place(client, **samsung())
    assert resting.status_code == 201, resting.content
    filled = place(client, **samsung(order_type="market", limit_price=None))
    assert filled.status_code == 201, filled.content
    reads(client, "kr_equity", resting.json()["broker_order_id"])
    assert cancel(client, resting.json()["broker_order_id"], "kr_equity").status_code == 204
    assert cancel(client, filled.json()["broker_order_id"], "kr_equity").status_code == 422

    faults.fail_next("GET", KIS_PATHS["balance"], connection_lost, times=3)  # the URL carries the account number
    assert client.get("/api/equity/account", {"asset_class": "kr_equity"}).status_code == 502
    faults.fail_next("POST", KIS_PATHS["order"], read_timeout, after=True)  # no client id at KIS: pending
    lost = place(client, **samsung())
    assert lost.status_code == 202, lost.content
    assert client.get(f"/api/equity/orders/{lost.json()['order_id']}", {"asset_class": "kr_equity"}) \
        .status_code == 200

    for token in list(fake.tokens):  # KIS expires the token early: the adapter gets a new one
        fake.tokens[token] = datetime(2026, 7, 10, 9, 0, tzinfo=KST)
    clock.shift(timedelta(minutes=2))
    assert client.get("/api/equity/positions", {"asset_class": "kr_equity"}).status_code == 200
    assert len(fake.issued) == 2

    clock.shift(timedelta(minutes=2))  # the app secret is revoked at KIS: the token goes, and no new one comes
    faults.fail_next("GET", KIS_PATHS["balance"], (500, {}, json.dumps(
        {"rt_cd": "1", "msg_cd": "EGW00121", "msg1": "유효하지 않은 token 입니다."}, ensure_ascii=False)))
    faults.fail_next("POST", KIS_PATHS["token"], (403, {}, json.dumps(
        {"error_code": "EGW00105", "error_description": "유효하지 않은 AppSecret입니다."}, ensure_ascii=False)))
    assert place(client, **samsung()).status_code == 403
    assert BrokerAccount.objects.get(user=user).status == "invalid"

    assert len(fake.tokens) == 2
    for position, token in enumerate(fake.tokens, start=1):
        evidence.secret(f"KIS access token {position}", token)
    evidence.assert_no_leaks()


# --- Upbit (live only) ------------------------------------------------------------------------------------

@pytest.fixture
def upbit(monkeypatch, settings, equity_orders):
    monkeypatch.setattr(upbit_adapter, "READ_RETRY_DELAYS", (0, 0))
    settings.ADMINS = [("Ops", "ops@example.com")]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = FakeUpbit(equity_orders.UPBIT_URL, prices={"KRW-BTC": Decimal("100000000")}, krw=Decimal("10000000"),
                         **UPBIT)
        faults = Faults(mock)
        fake.install(faults)
        yield fake, faults, mock


def krw_btc(**extra):
    return {"asset_class": "crypto", "symbol": "KRW-BTC", "side": "buy", "qty": 0.001, "order_type": "limit",
            "limit_price": 90000000, "live_mode": True, **extra}


def test_upbit_live_flows_and_failures_leak_nothing(evidence, user, upbit, django_capture_on_commit_callbacks):
    fake, faults, mock = upbit
    set_flag("FEATURE_EQUITY_LIVE", True)
    TraderProfileFactory(user=user, live_enabled=True)
    client = evidence.client(user)
    wrong = dict(UPBIT, secret_key="refusedUpbitSecret0000000000000000000042")
    secrets_of(evidence, "upbit", UPBIT)
    evidence.secret("upbit refused secret_key", wrong["secret_key"])

    refused = connect(client, exchange="upbit", asset_class="crypto", environment="live", credentials=wrong)
    assert refused.status_code == 400 and "credentials" in refused.json()["errors"], refused.content
    made = connect(client, exchange="upbit", asset_class="crypto", environment="live", credentials=UPBIT)
    assert made.status_code == 201, made.content

    with django_capture_on_commit_callbacks(execute=True):  # the first live order mails the operators
        resting = place(client, **krw_btc())
    for thread in threading.enumerate():
        if thread.name == "first-live-alert":
            thread.join(10)
    assert resting.status_code == 201, resting.content
    filled = place(client, **krw_btc(limit_price=110000000))
    assert filled.status_code == 201, filled.content
    reads(client, "crypto", resting.json()["broker_order_id"], live=True)
    assert cancel(client, resting.json()["broker_order_id"], "crypto", live=True).status_code == 204
    assert cancel(client, filled.json()["broker_order_id"], "crypto", live=True).status_code == 422

    faults.fail_next("POST", "/v1/orders", (500, {}, '{"error": {"name": "server_error", "message": "x"}}'))
    assert place(client, **krw_btc()).status_code == 201  # not found by identifier: re-sent under it
    faults.fail_next("POST", "/v1/orders", read_timeout, after=True)
    assert place(client, **krw_btc()).status_code == 201  # placed, the reply lost: found by identifier
    faults.fail_next("GET", "/v1/accounts", connection_lost, times=3)
    assert client.get("/api/equity/account", {"asset_class": "crypto", "live_mode": "true"}).status_code == 502

    fake.access_key = "upbitRevokedAtTheBroker000000000000000042"  # the key is revoked at Upbit
    assert place(client, **krw_btc()).status_code == 403
    assert BrokerAccount.objects.get(user=user).status == "invalid"

    signed = {c.request.headers["Authorization"] for c in mock.calls if "Authorization" in c.request.headers}
    assert signed
    for position, header in enumerate(sorted(signed), start=1):
        evidence.secret(f"Upbit request JWT {position}", header.removeprefix("Bearer "))
    assert mail.outbox, "the first-live-order alert"  # searched as well
    evidence.assert_no_leaks()



# --- what a client sends beyond the contract --------------------------------------------------------------

def test_secrets_a_client_sends_in_a_request_body_never_reach_the_audit_log(evidence, user, sim_crypto):
    """A buggy client posts its broker keys with a cancel: the audit row keeps the request without them."""
    client = evidence.client(user)
    sent = {"api_key": ALPACA["api_key"], "secret_key": ALPACA["secret_key"], "appkey": KIS["app_key"],
            "appsecret": KIS["app_secret"], "account_no": KIS["account_no"], "CANO": "73920418",
            "account_number": ALPACA_ACCOUNT_NUMBER, "Authorization": "Bearer " + UPBIT["secret_key"],
            "credentials": {"access_key": UPBIT["access_key"]}}
    for name, value in [*ALPACA.items(), *KIS.items(), *UPBIT.items()]:
        evidence.secret(name, value)
    evidence.secret("alpaca account number", ALPACA_ACCOUNT_NUMBER)
    evidence.secret("kis account number (CANO)", "73920418")
    order = client.post("/api/equity/orders", {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy",
                                               "qty": 0.01, "order_type": "limit", "limit_price": 1000},
                        format="json").json()
    canceled = client.delete(f"/api/equity/orders/{order['order_id']}?asset_class=crypto", sent, format="json")
    assert canceled.status_code == 204, canceled.content
    kept = BrokerOrderEvent.objects.get(event_type="canceled").request_body
    assert set(kept) == set(sent) and set(kept.values()) == {"[removed]"}
    evidence.assert_no_leaks()
