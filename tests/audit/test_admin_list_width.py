"""Admin's audit list fits a 1400 px window: the columns a reviewer reads first, the rest on the detail page.

The width is measured in a real browser (headless Chromium driven by Playwright) beside admin's own
navigation sidebar and the filter column, with the longest values the fields allow. The browser test
needs Debian's Chromium (`apt-get install chromium`) and the `playwright` package (requirements.txt);
without /usr/bin/chromium it is skipped and says so.
"""

from __future__ import annotations

import os
import shutil
from decimal import Decimal

import pytest

from audit.models import EventType
from audit.services import RequestMeta, record_order_event
from tests.factories import UserFactory

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
LIST = "/admin/audit/brokerorderevent/"
LONGEST_ID = "walkthrough-" + "x" * 52  # 64 characters, the longest client_order_id
HEADERS = ["When (UTC)", "User", "Event", "Order", "Client order id", "Error code", "Risk rule"]


def the_widest_events(user):
    """One event of each kind, with the longest values a reviewer can meet."""
    rows = [
        dict(event_type=EventType.REJECTED, error_code="IDEMPOTENCY_IN_PROGRESS", risk_rule=""),
        dict(event_type=EventType.REJECTED, error_code="RISK_RULE_VIOLATION", risk_rule="trade_risk"),
        dict(event_type=EventType.REJECTED, error_code="MARKET_CLOSED", risk_rule="market_hours"),
        dict(event_type=EventType.CANCEL_REJECTED, error_code="BROKER_UNAVAILABLE", risk_rule=""),
        dict(event_type=EventType.PLACED, error_code="", risk_rule="", first_live_order=True, environment="live"),
    ]
    for n, row in enumerate(rows):
        record_order_event(user_id=user.pk, asset_class="crypto", exchange="alpaca",
                           environment=row.pop("environment", "paper"), symbol="KRW-BTC" if n % 2 else "BTC/USD",
                           side="sell", qty=Decimal("0.0123456789"), order_type="stop_limit",
                           client_order_id=f"{LONGEST_ID[:-1]}{n}", broker_order_id=f"{n}" * 8 + "-" + "b" * 27,
                           broker_client_id="c" * 32, **row)


@pytest.fixture
def reviewer(db):
    return UserFactory(username="reviewer", is_staff=True, is_superuser=True)


@pytest.mark.django_db
def test_the_list_shows_the_reviewers_columns_and_shortens_long_ids(client, reviewer):
    trader = UserFactory(username="a-trader-with-a-very-long-login-name")
    the_widest_events(trader)
    client.force_login(reviewer)
    page = client.get(LIST).content.decode()
    for header in HEADERS:
        assert f">{header}</a>" in page or f">{header}</span>" in page, header
    assert f'title="{LONGEST_ID[:-1]}0"' in page  # the full id in the tooltip
    assert "IDEMPOTENCY_<wbr>IN_<wbr>PROGRESS" in page and "trade_risk" in page
    assert "first live order" in page and "<strong>live</strong>" in page
    assert "sell 0.0123456789" in page
    assert "bbbbbbbbbbbbbbbbbbbbbbbbbbb" not in page  # the broker's id is on the detail page, not in the list


@pytest.mark.django_db
def test_the_detail_page_shows_every_field(client, reviewer, user):
    event = record_order_event(user_id=user.pk, event_type=EventType.REJECTED, client_order_id=LONGEST_ID,
                               broker_order_id="broker-id-42", exchange="sim", environment="paper",
                               error_code="MARKET_CLOSED", error_detail="market_hours: XNYS is closed",
                               risk_rule="market_hours", meta=RequestMeta(request_id="req-42"))
    client.force_login(reviewer)
    page = client.get(f"{LIST}{event.pk}/change/").content.decode()
    for value in (LONGEST_ID, "broker-id-42", "MARKET_CLOSED", "market_hours: XNYS is closed", "req-42"):
        assert value in page, value


@pytest.mark.django_db
def test_the_list_can_still_be_searched_by_the_full_ids(client, reviewer, user):
    the_widest_events(user)
    client.force_login(reviewer)
    assert client.get(LIST, {"q": f"{LONGEST_ID[:-1]}3"}).context["cl"].result_count == 1
    assert client.get(LIST, {"q": "3" * 8}).context["cl"].result_count == 1


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"needs Chromium at {CHROMIUM} (apt-get install chromium)")
@pytest.mark.django_db(transaction=True)
def test_the_list_fits_1400_px_in_chromium(live_server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    reviewer = UserFactory(username="reviewer", is_staff=True, is_superuser=True, password="reviewer-pass-1234")
    the_widest_events(UserFactory(username="a-trader-with-a-very-long-login-name"))

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{live_server.url}/admin/login/?next={LIST}")
            page.fill("#id_username", reviewer.username)
            page.fill("#id_password", "reviewer-pass-1234")
            page.click("input[type=submit]")
            page.wait_for_selector("#result_list")
            page.screenshot(path=os.environ.get("ADMIN_SCREENSHOT", str(tmp_path / "audit-list-1400.png")),
                            full_page=True)
            measured = page.evaluate("""() => {
                const results = document.querySelector('.results');
                const table = document.querySelector('#result_list');
                return {
                    page: document.documentElement.scrollWidth,
                    viewport: window.innerWidth,
                    navSidebarShown: getComputedStyle(document.querySelector('#nav-sidebar')).display !== 'none',
                    filtersRight: document.querySelector('#changelist-filter').getBoundingClientRect().right,
                    resultsScroll: results.scrollWidth, resultsVisible: results.clientWidth,
                    tableRight: table.getBoundingClientRect().right,
                    headers: [...table.querySelectorAll('thead th')].map(
                        th => [th.textContent.trim(), Math.round(th.getBoundingClientRect().right)]),
                };
            }""")
        finally:
            browser.close()

    assert measured["viewport"] == 1400 and measured["navSidebarShown"], measured
    assert measured["page"] <= 1400, measured  # no horizontal scrolling of the page
    assert measured["resultsScroll"] <= measured["resultsVisible"], measured  # nor of the table's own box
    assert all(right <= 1400 for _, right in measured["headers"]), measured
    assert measured["filtersRight"] <= 1400, measured
    assert [name for name, _ in measured["headers"]] == HEADERS, measured
