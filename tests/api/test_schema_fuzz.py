"""Schema-driven fuzzing: every operation of /api/schema, called with generated input, answers as documented.

schemathesis loads the project's own OpenAPI document through the WSGI app and, for every operation,
sends the schema's examples, its coverage cases (boundaries, missing and wrong-typed fields,
unexpected methods and media types) and random valid and invalid requests. They carry a real JWT of
a user who has simulator connections and quotes, so the happy paths are reached too. Each reply must
not be a 500, must have a documented status code and content type, must match the documented body,
and every error is the {"code", "detail"} envelope.

Bounded for CI (the suite runs twice): a fixed seed and a few dozen examples per operation. Real
brokers are never reached: an HTTP call a broker adapter makes meets `responses` and fails as an
unreachable broker would. Below the fuzz run: the hostile inputs it (or its review) found, pinned.
"""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal

import pytest
import responses
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from equity.views import EXAMPLE_ORDER_ID, PLACE_ORDER_EXAMPLES
from tests.equity.helpers import assert_error, crypto_market, place

pytestmark = pytest.mark.django_db

FUZZ_CONFIG = {
    "seed": 20261126,
    "generation": {"mode": "all", "max-examples": 50, "database": "none"},
    "phases": {"stateful": {"enabled": False}},
    # 502 BROKER_UNAVAILABLE and 503 FEATURE_DISABLED are codes of the contract, not server errors.
    # A 500 is a bug, always; so is a 503 SERVICE_UNAVAILABLE here (see the check below).
    "checks": {"not_a_server_error": {"expected-statuses": ["2XX", "3XX", "4XX", 502, 503]}},
    "cache": {"enabled": False},
    # Placing an order has the most code behind it: five gates, the risk rules, the simulator.
    "operations": [{"include-operation-id": "place_order", "generation": {"max-examples": 250}}],
}
# The quotes that the `quotes` fixture sets.
QUOTED = {"crypto": {"BTC/USD": 50000, "ETH/USD": 3000}, "us_equity": {"AAPL": 188.20}, "kr_equity": {"005930": 70000}}
# The trader's simulator connections; kr_equity is left unconnected: the documented example of
# POST /api/brokers/accounts connects it.
SIM_ASSET_CLASSES = ("crypto", "us_equity")
# Operations whose success the run must reach, or it proves little about them.
MUST_SUCCEED = ("POST /api/equity/orders", "GET /api/equity/orders", "GET /api/equity/orders/{broker_order_id}",
                "DELETE /api/equity/orders/{broker_order_id}", "GET /api/equity/positions", "GET /api/equity/account",
                "GET /api/brokers/accounts", "POST /api/brokers/accounts", "DELETE /api/equity/orders",
                "POST /api/equity/orders/check", "GET /api/equity/kill-switch", "PUT /api/equity/kill-switch",
                "DELETE /api/equity/kill-switch")
# The trader controls that change what every later operation meets (cancel-all cancels the example
# order that DELETE /orders/{id} needs; a kill switch halts the placements): sent by a second trader.
SECOND_TRADER_OPERATIONS = ("DELETE /api/equity/orders", "PUT /api/equity/kill-switch", "DELETE /api/equity/kill-switch")


def every_error_is_the_envelope(ctx, response, case):
    """Also for the replies the built-in checks skip (unexpected methods and media types)."""
    if response.status_code < 400:
        return None
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.headers
    body = json.loads(response.content)
    assert isinstance(body.get("code"), str) and body["code"], body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    return None


def no_outage_while_dependencies_are_up(ctx, response, case):
    """The database and the cache are up during the run, so a SERVICE_UNAVAILABLE can only be an
    error that the input caused, reported as an outage."""
    if response.status_code == 503:
        assert json.loads(response.content)["code"] != "SERVICE_UNAVAILABLE", response.content
    return None


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          every_error_is_the_envelope, no_outage_while_dependencies_are_up]


class DjangoTestWSGI:
    """Django's test-client handler behind the WSGI interface that schemathesis calls.

    A bare WSGIHandler closes the database connection after each request, and with it the test's
    transaction; the test-client handler keeps it, and still runs every middleware, with CSRF
    checks enforced as in production.
    """

    def __init__(self):
        from django.test.client import ClientHandler

        self._handler = ClientHandler(enforce_csrf_checks=True)

    def __call__(self, environ, start_response):
        response = self._handler(environ)
        cookies = [("Set-Cookie", morsel.OutputString()) for morsel in response.cookies.values()]
        start_response(f"{response.status_code} {response.reason_phrase}", [*response.items(), *cookies])
        return [response.content]


def _amount(value) -> bool:
    """A number the API takes as a price or a quantity: > 0, < 10^12, at most 10 decimal places."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 10**12:
        return False
    return Decimal(str(value)).as_tuple().exponent >= -10


QUANTITIES = st.one_of(st.sampled_from([0.0001, 0.01, 1, 7, 1000, 999_999_999_999]),
                       st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("1e11"), places=4).map(float))


def _near(quote: float):
    return st.sampled_from([0.5, 0.99, 1, 1.01, 2]).map(lambda k: round(k * quote, 2))


def aim_orders_at_quoted_symbols(context, body):
    """flatmap_body hook of POST /api/equity/orders.

    A random symbol has no quote, and random numbers rarely fit 10 decimal places or the price
    fields of the order type, so nearly every generated order would stop at 400. Three in four of
    the well-formed ones become orders for a quoted symbol, with the price fields their order type
    needs (the fuzzer's own numbers are kept where the API takes them): they meet the gates, the
    risk rules and the simulator.
    """
    if (context.operation is None or context.operation.label != "POST /api/equity/orders"
            or not isinstance(body, dict) or body.get("asset_class") not in QUOTED
            or body.get("order_type") not in ("market", "limit", "stop", "stop_limit")):
        return st.just(body)
    quotes = QUOTED[body["asset_class"]]

    def aimed(symbol_and_prices, qty):
        symbol, limit_price, stop_price = symbol_and_prices
        order = {**body, "symbol": symbol, "live_mode": False}
        if not _amount(order.get("qty")):
            order["qty"] = qty
        for field, needed_by, price in (("limit_price", ("limit", "stop_limit"), limit_price),
                                        ("stop_price", ("stop", "stop_limit"), stop_price)):
            if order["order_type"] not in needed_by:
                order.pop(field, None)
            elif not _amount(order.get(field)):
                order[field] = price
        return order

    symbol_and_prices = st.sampled_from(sorted(quotes)).flatmap(
        lambda symbol: st.tuples(st.just(symbol), _near(quotes[symbol]), _near(quotes[symbol])))
    return st.integers(0, 3).flatmap(
        lambda aim: st.builds(aimed, symbol_and_prices, QUANTITIES) if aim else st.just(body))


@pytest.fixture
def trader(user, other_user, quotes, make_client):
    """A user with simulator connections, quotes, and the resting order that the schema's examples name;
    the second trader (other_user) has a crypto connection and resting orders for cancel-all."""
    from tests.factories import BrokerAccountFactory

    BrokerAccountFactory(user=other_user, asset_class="crypto")
    for price in (30000, 31000, 32000):
        resting = make_client(other_user).post("/api/equity/orders", crypto_market(order_type="limit", limit_price=price),
                                               format="json")
        assert resting.status_code == 201, resting.content

    user.kept_connection_ids = {str(BrokerAccountFactory(user=user, asset_class=a).pk) for a in SIM_ASSET_CLASSES}
    example = next(e.value for e in PLACE_ORDER_EXAMPLES if e.value.get("client_order_id") == EXAMPLE_ORDER_ID)
    placed = make_client(user).post("/api/equity/orders", example, format="json")
    assert placed.status_code == 201, placed.content
    return user


def caller_for(case, trader, other_user):
    """The trader, except for a generated DELETE of one of the connections the run relies on: that one
    is sent by another user, who must get a 404 (a connection of someone else's is not found); and
    the trader controls of SECOND_TRADER_OPERATIONS, sent by that other user, a trader too."""
    if (case.operation.label == "DELETE /api/brokers/accounts/{id}"
            and str(case.path_parameters.get("id")) in trader.kept_connection_ids):
        return other_user
    if case.operation.label in SECOND_TRADER_OPERATIONS:
        return other_user
    return trader


@pytest.fixture
def api_schema(settings, equity_orders):
    settings.DEBUG = False
    equity_orders.RATE_LIMIT_ORDERS = "200/m"  # the fuzzer meets the deeper gates; still a bound on the orders it makes
    loaded = schemathesis.openapi.from_wsgi("/api/schema", DjangoTestWSGI(), headers={"Accept": "application/json"},
                                            config=schemathesis.Config.from_dict(FUZZ_CONFIG))
    loaded.hook("flatmap_body")(aim_orders_at_quoted_symbols)
    return loaded


@pytest.fixture
def brokers_unreachable():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def statuses_seen():
    """Status codes per operation; after the run, the happy paths must have been reached."""
    seen = defaultdict(set)
    yield seen
    if seen:  # empty when the run itself failed early
        missed = [label for label in MUST_SUCCEED if not any(200 <= code < 300 for code in seen[label])]
        assert not missed, f"the fuzz run never reached a success of {missed}: {dict(seen)}"
        assert seen["POST /api/equity/orders"] & {403, 422, 429}, "no generated order got past validation"


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_every_operation_answers_as_documented_under_generated_input(case, trader, other_user, brokers_unreachable,
                                                                      statuses_seen):
    from rest_framework_simplejwt.tokens import RefreshToken

    token = RefreshToken.for_user(caller_for(case, trader, other_user)).access_token
    response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
    statuses_seen[case.operation.label].add(response.status_code)


# --- What the fuzz run and its review found, pinned -----------------------------------------------

def test_an_amount_of_a_trillion_or_more_is_a_400_not_a_500(api_client, sim_crypto):
    # qty x stop price beyond 28 digits used to overflow the risk rules' Decimal formatting.
    body = crypto_market(qty=9.924254918839909e17)
    errors = assert_error(place(api_client, body), 400, "VALIDATION_ERROR")["errors"]
    assert list(errors) == ["qty"]
    stop_limit = {**crypto_market(), "order_type": "stop_limit", "stop_price": 2.7672575724094186e17,
                  "limit_price": 50500}
    assert list(assert_error(place(api_client, stop_limit), 400, "VALIDATION_ERROR")["errors"]) == ["stop_price"]


def test_the_largest_amounts_accepted_meet_the_risk_rules_without_error(api_client, sim_crypto):
    body = {**crypto_market(qty=999_999_999_999.99), "order_type": "stop_limit",
            "stop_price": 999_999_999_999.99, "limit_price": 999_999_999_999.99}
    assert_error(place(api_client, body), 422, "INSUFFICIENT_FUNDS")


@pytest.mark.parametrize("method", ["get", "delete"])
def test_an_order_id_holding_a_nul_is_not_found(api_client, sim_crypto, method):
    # PostgreSQL refuses NUL in text; it used to surface as 503 SERVICE_UNAVAILABLE.
    resp = getattr(api_client, method)("/api/equity/orders/a%00b?asset_class=crypto")
    assert_error(resp, 404, "ORDER_NOT_FOUND")


@pytest.mark.parametrize("header", [{"HTTP_X_FORWARDED_FOR": "not-an-ip"}, {"HTTP_X_REQUEST_ID": "a\x00b"},
                                    {"HTTP_X_REQUEST_ID": "é" * 80}])
def test_a_malformed_client_header_neither_fails_the_order_nor_reaches_the_audit_row(api_client, sim_crypto, header):
    # PostgreSQL refused both (inet, NUL in text): a 500 and a 503 SERVICE_UNAVAILABLE.
    from audit.models import BrokerOrderEvent

    resp = api_client.post("/api/equity/orders", crypto_market(), format="json", **header)
    assert resp.status_code == 201, resp.content
    events = BrokerOrderEvent.objects.filter(client_order_id=resp.json()["client_order_id"])
    assert events.exists()
    for event in events:
        assert event.client_ip == "127.0.0.1"  # the peer's address, as the header is not one
        assert event.request_id.isascii() and event.request_id.isprintable() and len(event.request_id) <= 64


@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
@pytest.mark.parametrize("path", ["/api/equity/orders/0.5/extra", "/api/nothing-here", "/api/equity/orders/a%2Fb",
                                  "/api/brokers/accounts/-1"])
def test_an_unroutable_api_path_is_a_json_404_in_either_debug_mode(api_client, settings, debug, method, path):
    settings.DEBUG = debug
    api_client.enforce_csrf_checks = True
    resp = getattr(api_client, method)(path)
    assert resp["Content-Type"].startswith("application/json")
    assert_error(resp, 404, "NOT_FOUND")


def test_a_database_refusal_is_a_500_bug_not_a_503_outage(api_client, monkeypatch):
    from django.db import DataError

    from equity import selectors

    def refuse(**kwargs):
        raise DataError("value too long for type character varying(64)")

    monkeypatch.setattr(selectors, "positions_for_user", refuse)
    api_client.raise_request_exception = False
    assert_error(api_client.get("/api/equity/positions", {"asset_class": "crypto"}), 500, "INTERNAL_ERROR")


def test_the_schema_generates_without_warnings_and_validates(tmp_path):
    from django.core.management import call_command
    from drf_spectacular.drainage import GENERATOR_STATS

    GENERATOR_STATS.reset()  # warnings are counted per process: count this generation's only
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))


def test_the_schema_lists_each_path_once_as_the_spec_writes_it(api_client):
    paths = api_client.get("/api/schema", HTTP_ACCEPT="application/json").json()["paths"]
    assert "/api/equity/orders" in paths and "/api/equity/orders/{broker_order_id}" in paths
    assert not [p for p in paths if p.endswith("/")]
