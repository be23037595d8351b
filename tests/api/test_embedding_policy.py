"""What the apps keep whatever the host says: EQUITY_ORDERS defaults and checks, the views' own policy.

The full host (another `config`, a UUID e-mail user, DRF defaults) runs from the wheel in
tests/test_host_project.py; these pin the same rules in-process, on the demo site's settings
overridden the way a host would have them.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from cryptography.fernet import Fernet
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured

from brokers.conf import KEYS, conf
from tests.equity.helpers import assert_error, crypto_limit, place

pytestmark = pytest.mark.django_db

UTC_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
# DRF with nothing set, as a host runs it: AllowAny, DRF's handler, decimals as strings.
DRF_DEFAULTS = {"DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication",
                                                   "rest_framework_simplejwt.authentication.JWTAuthentication"],
                "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}


@pytest.fixture
def host_like(settings):
    settings.REST_FRAMEWORK = DRF_DEFAULTS
    settings.TIME_ZONE = "Asia/Seoul"


def _ids(messages) -> set[str]:
    return {m.id for m in messages}


# --- EQUITY_ORDERS ----------------------------------------------------------------------------------

def test_every_key_but_the_credentials_key_has_a_default(settings):
    settings.EQUITY_ORDERS = {"CREDENTIALS_KEYS": [Fernet.generate_key().decode()]}
    assert conf.RATE_LIMIT_ORDERS == "30/m" and conf.RATE_LIMIT_LIVE_DAILY == 200
    assert conf.BROKER_TIMEOUT_SECONDS == 10.0 and conf.RISK_MAX_TRADE_RISK_PCT == Decimal("0.02")
    assert conf.AUTHENTICATION_CLASSES is None and conf.EQUITY_ALERT_WEBHOOK_URL is None
    for name in KEYS:
        if name != "CREDENTIALS_KEYS":
            getattr(conf, name)


def test_a_test_override_is_seen_at_once_and_undone_after(equity_orders):
    equity_orders.RATE_LIMIT_ORDERS = "2/m"
    assert conf.RATE_LIMIT_ORDERS == "2/m"


def test_the_override_of_the_previous_test_is_gone():
    assert conf.RATE_LIMIT_ORDERS == "30/m"


def test_amounts_a_host_writes_as_floats_or_strings_become_exact_decimals(settings):
    settings.EQUITY_ORDERS = {**settings.EQUITY_ORDERS, "RISK_MAX_TRADE_RISK_PCT": 0.015,
                              "SIM_STARTING_CASH_USD": "2500.50"}
    assert conf.RISK_MAX_TRADE_RISK_PCT == Decimal("0.015")
    assert conf.SIM_STARTING_CASH_USD == Decimal("2500.50")


def test_the_credentials_keys_may_be_one_comma_separated_string(settings):
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.EQUITY_ORDERS = {"CREDENTIALS_KEYS": f"{new}, {old}"}
    assert conf.CREDENTIALS_KEYS == [new, old]


@pytest.mark.parametrize("equity_orders_setting", [{}, {"CREDENTIALS_KEYS": []}, {"CREDENTIALS_KEYS": " , "}, None])
def test_check_names_a_missing_credentials_key(settings, equity_orders_setting):
    if equity_orders_setting is None:
        del settings.EQUITY_ORDERS
    else:
        settings.EQUITY_ORDERS = equity_orders_setting
    errors = [m for m in run_checks() if m.id == "brokers.E001"]
    assert len(errors) == 1 and 'EQUITY_ORDERS["CREDENTIALS_KEYS"] is missing' in errors[0].msg
    with pytest.raises(ImproperlyConfigured, match=r'EQUITY_ORDERS\["CREDENTIALS_KEYS"\] is required'):
        conf.CREDENTIALS_KEYS  # noqa: B018 - a request that reached it anyway gets the name, not an AttributeError


def test_check_names_a_bad_key_by_position_never_by_value(settings):
    bad = "not-a-fernet-key-at-all"
    settings.EQUITY_ORDERS = {"CREDENTIALS_KEYS": [Fernet.generate_key().decode(), bad]}
    (error,) = [m for m in run_checks() if m.id == "brokers.E002"]
    assert "key 2 is not a Fernet key" in error.msg and bad not in error.msg


def test_check_warns_of_an_unknown_key(settings):
    settings.EQUITY_ORDERS = {**settings.EQUITY_ORDERS, "RATE_LIMIT_ORDER": "5/m"}
    (warning,) = [m for m in run_checks() if m.id == "brokers.W001"]
    assert "RATE_LIMIT_ORDER" in warning.msg


def test_the_demo_site_passes_its_checks():
    assert not _ids(run_checks()) & {"brokers.E001", "brokers.E002", "brokers.W001"}


# --- the views' own policy ------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [("get", "/api/equity/orders?asset_class=crypto"),
                                              ("post", "/api/equity/orders"), ("get", "/api/brokers/accounts"),
                                              ("get", "/api/equity/positions?asset_class=crypto")])
def test_under_drf_defaults_anonymous_calls_are_401_in_the_envelope(host_like, client, method, path):
    resp = getattr(client, method)(path)
    assert_error(resp, 401, "NOT_AUTHENTICATED")
    assert resp["WWW-Authenticate"].startswith("Bearer")  # from JWT, although sessions come first


def test_under_drf_defaults_amounts_are_numbers_and_times_utc_with_z(host_like, api_client, sim_crypto):
    order = place(api_client, crypto_limit(client_order_id="k1")).json()
    assert order["qty"] == 0.01 and order["limit_price"] == 30000
    assert UTC_Z.match(order["submitted_at"]) and UTC_Z.match(order["updated_at"])
    account = api_client.get("/api/equity/account", {"asset_class": "crypto"}).json()
    assert isinstance(account["cash"], float | int) and UTC_Z.match(account["as_of"])
    connection = api_client.get("/api/brokers/accounts").json()["items"][0]
    assert UTC_Z.match(connection["created_at"])


def test_under_drf_defaults_validation_errors_keep_the_envelope(host_like, api_client, sim_crypto):
    body = assert_error(place(api_client, crypto_limit(qty="lots")), 400, "VALIDATION_ERROR")
    assert "qty" in body["errors"]


def test_a_session_only_host_still_answers_anonymous_with_401(settings, client):
    settings.REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"]}
    resp = client.get("/api/equity/orders?asset_class=crypto")
    assert_error(resp, 401, "NOT_AUTHENTICATED")
    assert "WWW-Authenticate" not in resp  # sessions have no scheme to name


def test_a_session_post_without_csrf_is_refused_in_the_envelope(user, sim_crypto):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    body = assert_error(browser.post("/api/equity/orders", crypto_limit(), content_type="application/json"),
                        403, "PERMISSION_DENIED")
    assert "CSRF" in body["detail"]


def test_equity_orders_authentication_classes_override_the_hosts(equity_orders, api_client, sim_crypto):
    assert api_client.get("/api/brokers/accounts").status_code == 200  # JWT: the host's classes
    equity_orders.AUTHENTICATION_CLASSES = ["rest_framework.authentication.SessionAuthentication"]
    assert_error(api_client.get("/api/brokers/accounts"), 401, "NOT_AUTHENTICATED")


def test_the_json_errors_middleware_follows_the_configured_prefix(equity_orders, client):
    assert not client.get("/trading/nothing-here")["Content-Type"].startswith("application/json")
    equity_orders.JSON_ERRORS_PATH_PREFIXES = ["/trading/"]
    assert_error(client.get("/trading/nothing-here"), 404, "NOT_FOUND")


# --- the schema a generated client reads --------------------------------------------------------------

@pytest.fixture
def schema(client):
    return client.get("/api/schema", HTTP_ACCEPT="application/json").json()


def test_the_login_body_asks_for_the_login_and_password_only(schema):
    components = schema["components"]["schemas"]
    login = schema["paths"]["/api/auth/token"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert login == {"$ref": "#/components/schemas/TokenObtainRequest"}
    assert set(components["TokenObtainRequest"]["properties"]) == {"username", "password"}
    assert set(components["TokenObtainRequest"]["required"]) == {"username", "password"}
    reply = schema["paths"]["/api/auth/token"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(components[reply["$ref"].rsplit("/", 1)[1]]["required"]) == {"access", "refresh"}
    refresh = schema["paths"]["/api/auth/token/refresh"]["post"]["requestBody"]["content"]["application/json"]
    assert set(components[refresh["schema"]["$ref"].rsplit("/", 1)[1]]["required"]) == {"refresh"}


def test_enums_have_names_of_their_own(schema):
    components = schema["components"]["schemas"]
    enums = {name for name, body in components.items() if "enum" in body}
    assert {"AssetClassEnum", "OrderSideEnum", "PositionSideEnum", "OrderTypeEnum", "TimeInForceEnum",
            "OrderStatusEnum", "ExchangeEnum", "EnvironmentEnum"} <= enums
    # drf-spectacular's collision names: <first serializer><field>Enum, e.g. PlaceOrderRequestSideEnum.
    serializers = ("PlaceOrderRequest", "OrderResponse", "OrderListQuery", "OrderQuery", "SnapshotQuery",
                   "BrokerConnection", "AccountResponse")
    assert not [name for name in enums if name.startswith(serializers)]
    assert components["OrderSideEnum"]["enum"] == ["buy", "sell"]
    assert components["PositionSideEnum"]["enum"] == ["LONG", "SHORT"]


def test_the_readme_table_lists_every_key():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Add to an existing Django project", 1)[1].split("\n## ", 1)[0]
    assert [name for name in KEYS if f"`{name}`" not in section] == []
