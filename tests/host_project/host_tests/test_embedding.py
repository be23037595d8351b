"""The order apps inside a host product that runs DRF with its own defaults (see ../README.md).

These run in the host's own venv, with the apps installed from the wheel: nothing of the
checkout is importable here.
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

PASSWORD = "host-pass-1234"
UTC_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
RESTING_BUY = {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.01, "order_type": "limit",
               "limit_price": 40000}


@pytest.fixture
def quotes(db):
    from brokers.sim_exchange import set_quote

    set_quote("crypto", "BTC/USD", "50000")


def make_user(email: str, **extra):
    return get_user_model().objects.create_user(email=email, password=PASSWORD, **extra)


@pytest.fixture
def alice(db):
    return make_user("alice@example.com")


@pytest.fixture
def bob(db):
    return make_user("bob@example.com")


def jwt_client(email: str) -> APIClient:
    """A client with a bearer token from the host's token route, logging in by e-mail."""
    client = APIClient()
    resp = client.post("/trading/auth/token", {"email": email, "password": PASSWORD}, format="json")
    assert resp.status_code == 200, resp.content
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {resp.json()['access']}")
    return client


def connect_simulator(client) -> None:
    resp = client.post("/trading/brokers/accounts", {"asset_class": "crypto", "exchange": "sim",
                                                      "environment": "paper"}, format="json")
    assert resp.status_code == 201, resp.content


class SessionBrowser:
    """A browser of the host's web app: session cookie and CSRF, as the host's pages would send them."""

    def __init__(self, email: str):
        self.client = Client(enforce_csrf_checks=True)
        assert self.client.login(email=email, password=PASSWORD)
        self.client.get("/admin/login/")  # any page with a form sets the csrftoken cookie
        self.token = self.client.cookies["csrftoken"].value

    def get(self, path, data=None):
        return self.client.get(path, data)

    def post(self, path, body, *, csrf=True):
        headers = {"X-CSRFToken": self.token} if csrf else {}
        return self.client.post(path, body, content_type="application/json", headers=headers)

    def delete(self, path):
        return self.client.delete(path, headers={"X-CSRFToken": self.token})


def test_the_apps_come_from_the_installed_wheel_not_a_checkout():
    import brokers
    import equity

    for app in (equity, brokers):
        assert "site-packages" in app.__file__
    with pytest.raises(ImportError):
        import config.middleware  # noqa: F401 - the demo site's module; this `config` is the host's


@pytest.mark.parametrize(("method", "path"), [("get", "/trading/equity/orders?asset_class=crypto"),
                                              ("post", "/trading/equity/orders"),
                                              ("get", "/trading/equity/account?asset_class=crypto"),
                                              ("get", "/trading/brokers/accounts")])
def test_anonymous_calls_are_refused_although_the_host_allows_any(db, method, path):
    resp = getattr(APIClient(), method)(path, RESTING_BUY if method == "post" else None, format="json")
    assert resp.status_code == 401
    assert resp.json()["code"] == "NOT_AUTHENTICATED"
    # Sessions come first in the host's classes; the scheme still comes from the JWT class.
    assert resp["WWW-Authenticate"].startswith("Bearer")


def test_a_jwt_from_the_host_token_route_places_lists_gets_and_cancels(alice, quotes):
    client = jwt_client("alice@example.com")
    connect_simulator(client)

    placed = client.post("/trading/equity/orders", {**RESTING_BUY, "client_order_id": "host-jwt-1"}, format="json")
    assert placed.status_code == 201, placed.content
    order = placed.json()
    # Amounts are JSON numbers although the host keeps COERCE_DECIMAL_TO_STRING on; UTC with a Z
    # although the host's TIME_ZONE is Asia/Seoul.
    assert order["qty"] == 0.01 and order["limit_price"] == 40000
    assert isinstance(order["filled_qty"], (int, float))
    assert UTC_Z.match(order["submitted_at"]), order["submitted_at"]

    listed = client.get("/trading/equity/orders", {"asset_class": "crypto"})
    assert listed.status_code == 200
    assert [o["order_id"] for o in listed.json()["items"]] == ["host-jwt-1"]
    assert listed.json()["total"] == 1  # the order tally, keyed by a UUID user id

    got = client.get(f"/trading/equity/orders/{order['broker_order_id']}", {"asset_class": "crypto"})
    assert got.status_code == 200 and got.json()["status"] == "accepted"

    canceled = client.delete(f"/trading/equity/orders/{order['broker_order_id']}?asset_class=crypto")
    assert canceled.status_code == 204
    assert client.get("/trading/equity/orders/host-jwt-1", {"asset_class": "crypto"}).json()["status"] == "canceled"

    account = client.get("/trading/equity/account", {"asset_class": "crypto"}).json()
    assert isinstance(account["cash"], (int, float)) and UTC_Z.match(account["as_of"])


def test_a_session_login_with_csrf_places_lists_gets_and_cancels(alice, quotes):
    browser = SessionBrowser("alice@example.com")
    assert browser.post("/trading/brokers/accounts", {"asset_class": "crypto", "exchange": "sim",
                                                      "environment": "paper"}).status_code == 201

    placed = browser.post("/trading/equity/orders", {**RESTING_BUY, "client_order_id": "host-session-1"})
    assert placed.status_code == 201, placed.content
    broker_order_id = placed.json()["broker_order_id"]

    listed = browser.get("/trading/equity/orders", {"asset_class": "crypto"})
    assert [o["order_id"] for o in listed.json()["items"]] == ["host-session-1"]
    assert browser.get(f"/trading/equity/orders/{broker_order_id}", {"asset_class": "crypto"}).status_code == 200
    assert browser.delete(f"/trading/equity/orders/{broker_order_id}?asset_class=crypto").status_code == 204


def test_a_session_post_without_the_csrf_token_is_refused_in_the_envelope(alice, quotes):
    browser = SessionBrowser("alice@example.com")
    resp = browser.post("/trading/equity/orders", RESTING_BUY, csrf=False)
    assert resp.status_code == 403
    assert resp.json()["code"] == "PERMISSION_DENIED" and "CSRF" in resp.json()["detail"]


def test_another_users_order_is_not_found(alice, bob, quotes):
    owner = jwt_client("alice@example.com")
    connect_simulator(owner)
    order = owner.post("/trading/equity/orders", {**RESTING_BUY, "client_order_id": "alices"}, format="json").json()

    intruder = jwt_client("bob@example.com")
    connect_simulator(intruder)
    for ref in (order["broker_order_id"], "alices"):
        got = intruder.get(f"/trading/equity/orders/{ref}", {"asset_class": "crypto"})
        assert got.status_code == 404 and got.json()["code"] == "ORDER_NOT_FOUND"
        gone = intruder.delete(f"/trading/equity/orders/{ref}?asset_class=crypto")
        assert gone.status_code == 404 and gone.json()["code"] == "ORDER_NOT_FOUND"
    assert intruder.get("/trading/equity/orders", {"asset_class": "crypto"}).json()["items"] == []


def test_validation_errors_keep_the_envelope_while_the_hosts_endpoint_keeps_drf_shape(alice):
    client = jwt_client("alice@example.com")
    ours = client.post("/trading/equity/orders", {**RESTING_BUY, "qty": "lots"}, format="json")
    assert ours.status_code == 400
    assert ours.json()["code"] == "VALIDATION_ERROR" and "qty" in ours.json()["errors"]

    hosts = APIClient().post("/api/newsletter/", {"email": "not-an-email"}, format="json")
    assert hosts.status_code == 400
    assert hosts.json() == {"email": ["Enter a valid email address."]}  # DRF's own handler, untouched
    assert APIClient().post("/api/newsletter/", {"email": "a@example.com"}, format="json").status_code == 201


def test_a_bad_login_at_the_token_route_is_401_in_the_envelope(alice):
    resp = APIClient().post("/trading/auth/token", {"email": "alice@example.com", "password": "wrong"}, format="json")
    assert resp.status_code == 401 and resp.json()["code"] == "NOT_AUTHENTICATED"


def test_the_audit_rows_show_in_the_hosts_admin_searchable_by_email(alice, quotes):
    client = jwt_client("alice@example.com")
    connect_simulator(client)
    client.post("/trading/equity/orders", {**RESTING_BUY, "client_order_id": "audited-1"}, format="json")
    make_user("ops@example.com", is_staff=True, is_superuser=True)
    admin = Client()
    assert admin.login(email="ops@example.com", password=PASSWORD)

    page = admin.get("/admin/audit/brokerorderevent/", {"q": "alice@example.com"})
    assert page.status_code == 200
    assert b"audited-1" in page.content
    assert b"audited-1" not in admin.get("/admin/audit/brokerorderevent/", {"q": "nobody@example.com"}).content
    by_user = admin.get("/admin/audit/brokerorderevent/", {"user__id__exact": str(alice.pk)})
    assert by_user.status_code == 200 and b"audited-1" in by_user.content
    event_id = re.search(rb"/admin/audit/brokerorderevent/(\d+)/change/", page.content).group(1).decode()
    detail = admin.get(f"/admin/audit/brokerorderevent/{event_id}/change/")
    assert detail.status_code == 200 and b'name="_save"' not in detail.content  # read-only
    assert admin.get("/admin/audit/brokerorderevent/add/").status_code == 403


def test_the_hosts_schema_has_the_order_routes_at_its_prefix(db):
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    for path in ("/trading/equity/orders/", "/trading/equity/orders/{broker_order_id}/",
                 "/trading/brokers/accounts/", "/trading/auth/token/"):
        assert path in schema["paths"], sorted(schema["paths"])
    login = schema["components"]["schemas"]["TokenObtainRequest"]
    assert set(login["required"]) == {"email", "password"}  # the host's USERNAME_FIELD, no access/refresh


def test_the_flags_come_from_the_apps_migrations(db):
    from waffle.models import Flag

    assert {f.name: f.everyone for f in Flag.objects.filter(name__startswith="FEATURE_EQUITY_")} == {
        "FEATURE_EQUITY_PAPER": True, "FEATURE_EQUITY_LIVE": False}


def test_set_live_enabled_finds_the_user_by_email(alice):
    from django.core.management import call_command

    from brokers.models import TraderProfile

    call_command("set_live_enabled", "alice@example.com", "on")
    assert TraderProfile.objects.get(user=alice).live_enabled
    with pytest.raises(Exception, match="No user"):
        call_command("set_live_enabled", "alice", "on")


def test_seed_demo_makes_an_email_login_demo_user(db):
    from django.core.management import call_command

    call_command("seed_demo")
    demo = get_user_model().objects.get(email="demo@example.com")
    assert isinstance(demo.pk, uuid.UUID)
    assert get_user_model().objects.get(email="admin@example.com").is_superuser
    assert demo.broker_accounts.count() == 3


def test_first_live_order_alert_carries_the_uuid_as_a_string(alice, quotes, settings):
    from equity.alerts import alert_body
    from equity.models import Order

    client = jwt_client("alice@example.com")
    connect_simulator(client)
    client.post("/trading/equity/orders", {**RESTING_BUY, "client_order_id": "alert-1"}, format="json")
    body = alert_body(Order.objects.get(client_order_id="alert-1"))
    assert body["user_id"] == str(alice.pk) and body["username"] == "alice@example.com"
    assert body["qty"] == float(Decimal("0.01"))


def test_the_host_runs_on_the_database_and_cache_it_was_given(db):
    """On the suite's PostgreSQL + Redis leg the host is on them too (its own database name)."""
    import os

    from django.core.cache import caches
    from django.db import connection

    wanted = "postgresql" if (os.environ.get("HOST_DATABASE_URL") or "").startswith("postgres") else "sqlite"
    assert connection.vendor == wanted
    assert ("Redis" in type(caches["default"]).__name__) == bool(os.environ.get("REDIS_URL"))


def test_an_order_without_a_connection_points_at_the_hosts_connections_route(alice, quotes):
    resp = jwt_client("alice@example.com").post("/trading/equity/orders", RESTING_BUY, format="json")
    assert resp.status_code == 403 and resp.json()["code"] == "BROKER_NOT_CONFIGURED"
    assert "POST /trading/brokers/accounts" in resp.json()["detail"] and "/api/" not in resp.json()["detail"]
