"""KIS paper placements and cancels under the mock server's 2 requests/s, from four gunicorn workers.

A loopback FakeKis (tests/brokers/venues/kis_http.py) refuses a third request of one app key within
any second with EGW00201, as KIS's gateway does. The workers share one budget per app key through
Redis (brokers/pacing.py), so the fake never has to refuse an order; reads and cancels it refuses
would be retried, and every placement and cancel must succeed, each order placed exactly once.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
import time_machine
from rest_framework_simplejwt.tokens import RefreshToken

from brokers.models import BrokerAccount
from brokers.types import AssetClass, Environment, Exchange
from tests.brokers.venues.kis import APP_KEY, FakeKis, credentials
from tests.brokers.venues.kis_http import RateLimitedKis
from tests.factories import UserFactory

pytestmark = pytest.mark.multiprocess

KST = ZoneInfo("Asia/Seoul")
CONFIG = Path(__file__).resolve().parent / "gunicorn_shifted_clock.py"
ORDERS = 4


def _next_krx_morning() -> datetime:
    """10:00 KST of a trading day after today: 2026-12-07 is a Monday (KRX open 09:00-15:30)."""
    return datetime(2026, 12, 7, 10, 0, tzinfo=KST)


def test_paper_orders_and_cancels_from_four_workers_stay_under_two_requests_a_second(gunicorn_server):
    offset = _next_krx_morning().timestamp() - time.time()
    with time_machine.travel(time.time() + offset, tick=True):
        time.time()  # time_machine starts ticking at the first read of the clock
        fake = FakeKis(prices={"005930": Decimal("70000")})
        with RateLimitedKis(fake, per_second=2) as kis:
            user = UserFactory(username="kis-paced")
            BrokerAccount.objects.create(
                user=user, asset_class=AssetClass.KR_EQUITY, exchange=Exchange.KIS, environment=Environment.PAPER,
                credentials=credentials(), key_hint=APP_KEY[-4:])
            server = gunicorn_server(env={
                "KIS_MOCK_URL": kis.base, "GUNICORN_CMD_ARGS": f"--config {CONFIG}",
                "TEST_CLOCK_OFFSET_SECONDS": str(offset), "PACING_MAX_WAIT_SECONDS": "40",
                "RATE_LIMIT_ORDERS": "1000/m"})
            headers = {"Authorization": f"Bearer {RefreshToken.for_user(user).access_token}"}

            def place(n: int) -> requests.Response:
                body = {"asset_class": "kr_equity", "symbol": "005930", "side": "buy", "qty": 1,
                        "order_type": "limit", "limit_price": 60000, "client_order_id": f"paced-{n}"}
                return requests.post(server.base + "/api/equity/orders", json=body, headers=headers, timeout=120)

            with ThreadPoolExecutor(max_workers=ORDERS) as pool:
                placed = list(pool.map(place, range(ORDERS)))
            assert [r.status_code for r in placed] == [201] * ORDERS, [r.text[:300] for r in placed]
            ids = [r.json()["broker_order_id"] for r in placed]

            def cancel(broker_order_id: str) -> requests.Response:
                return requests.delete(f"{server.base}/api/equity/orders/{broker_order_id}",
                                       params={"asset_class": "kr_equity"}, headers=headers, timeout=120)

            with ThreadPoolExecutor(max_workers=ORDERS) as pool:
                canceled = list(pool.map(cancel, ids))
            assert [r.status_code for r in canceled] == [204] * ORDERS, [r.text[:300] for r in canceled]

            assert kis.violations == []
            assert kis.refused_orders() == []  # an order POST refused with EGW00201 is never resent
            assert kis.refused == [], f"the fake had to refuse {kis.refused}"
            originals = [r for r in fake.rows if not r["orgn_odno"]]
            assert len(originals) == ORDERS  # each order placed exactly once
            assert all(r["rmn_qty"] == "0" for r in originals)  # and each canceled
            arrivals = [t for t, _, _ in kis.accepted]
            assert max(sum(1 for t in arrivals if first <= t < first + 1.0) for first in arrivals) <= 2
