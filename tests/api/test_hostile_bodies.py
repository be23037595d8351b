"""Hostile request bodies (issue 13, item 3): bounded in size and depth, never a 500.

2 KB of brackets nested 1000 deep used to raise RecursionError in json.load on every route that
reads a body, the two token routes included (no login needed): a 500, a traceback at ERROR, and
with ADMINS set a mail to the operators. Now a body nested deeper than EQUITY_ORDERS["MAX_JSON_DEPTH"] is 400
VALIDATION_ERROR, one over ["MAX_BODY_BYTES"] is 413 PAYLOAD_TOO_LARGE, and nothing is logged
above WARNING.
"""

from __future__ import annotations

import json
import logging

import pytest
from django.core import mail
from rest_framework.test import APIClient

from audit.models import BrokerOrderEvent
from brokers.models import BrokerAccount
from brokers.parsers import nesting_depth_exceeds
from equity.models import Order
from tests.equity.helpers import assert_error, crypto_limit

pytestmark = pytest.mark.django_db

BODY_ROUTES = ["/api/auth/token", "/api/auth/token/refresh", "/api/brokers/accounts", "/api/equity/orders"]
PUBLIC_BODY_ROUTES = ["/api/auth/token", "/api/auth/token/refresh"]
BRACKET_BOMB = "[" * 1000 + "]" * 1000  # 2 KB
OBJECT_BOMB = '{"a":' * 1000 + "1" + "}" * 1000


@pytest.fixture
def watched(caplog, settings):
    """Every log record from WARNING up, and ADMINS set so that an error report would be mailed."""
    settings.ADMINS = [("Operators", "ops@example.com")]
    caplog.set_level(logging.WARNING)
    return caplog


def assert_nothing_above_warning(caplog):
    loud = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.levelno > logging.WARNING]
    assert not loud, loud
    assert mail.outbox == []


def post_raw(client, path, body: str | bytes, **extra):
    return client.post(path, data=body, content_type="application/json", **extra)


@pytest.mark.parametrize("bomb", [BRACKET_BOMB, OBJECT_BOMB], ids=["array", "object"])
@pytest.mark.parametrize("path", BODY_ROUTES)
def test_a_body_nested_1000_deep_is_400_on_every_body_route_with_nothing_logged_above_warning(
        api_client, watched, path, bomb):
    resp = post_raw(api_client, path, bomb)
    body = assert_error(resp, 400, "VALIDATION_ERROR")
    assert "nested deeper than 32 levels" in body["detail"]
    assert_nothing_above_warning(watched)
    assert not Order.objects.exists() and not BrokerOrderEvent.objects.exists()
    assert not BrokerAccount.objects.exists()


@pytest.mark.parametrize("method,path", [("delete", "/api/equity/orders/k1?asset_class=crypto"),
                                         ("get", "/api/equity/orders?asset_class=crypto"),
                                         ("delete", "/api/brokers/accounts/1")])
def test_a_bomb_in_the_body_of_a_read_or_a_delete_is_an_envelope_never_a_500(api_client, watched, method, path):
    api_client.raise_request_exception = False
    resp = api_client.generic(method.upper(), path, BRACKET_BOMB, content_type="application/json")
    assert resp.status_code < 500 and resp["Content-Type"].startswith("application/json"), resp.content[:300]
    assert set(resp.json()) >= {"code", "detail"}
    assert_nothing_above_warning(watched)


@pytest.mark.parametrize("path", PUBLIC_BODY_ROUTES)
def test_the_token_routes_refuse_the_bomb_without_any_login(db, watched, path):
    assert_error(post_raw(APIClient(), path, BRACKET_BOMB), 400, "VALIDATION_ERROR")
    assert_nothing_above_warning(watched)


@pytest.mark.parametrize("path", ["/api/brokers/accounts", "/api/equity/orders"])
def test_without_a_token_the_bomb_on_a_protected_route_is_a_plain_401(db, watched, path):
    assert_error(post_raw(APIClient(), path, BRACKET_BOMB), 401, "NOT_AUTHENTICATED")
    assert_nothing_above_warning(watched)


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_a_body_over_the_limit_is_413_payload_too_large(api_client, watched, equity_orders, path):
    big = json.dumps({"username": "x" * equity_orders.MAX_BODY_BYTES, "password": "p"})
    resp = post_raw(api_client, path, big)
    assert_error(resp, 413, "PAYLOAD_TOO_LARGE")
    assert str(equity_orders.MAX_BODY_BYTES) in resp.json()["detail"]
    assert_nothing_above_warning(watched)


def test_a_declared_length_over_the_limit_is_413_before_a_byte_is_read(api_client):
    """Content-Length says 10 GB: refused on the header alone (reading would fail the fake stream)."""
    resp = api_client.generic("POST", "/api/equity/orders", b"{}", content_type="application/json",
                              CONTENT_LENGTH=str(10 * 1024**3))
    assert_error(resp, 413, "PAYLOAD_TOO_LARGE")


def test_an_order_body_padded_to_exactly_the_limit_is_parsed(api_client, sim_crypto, equity_orders):
    order = json.dumps(crypto_limit())
    padded = order + " " * (equity_orders.MAX_BODY_BYTES - len(order))
    assert len(padded.encode()) == equity_orders.MAX_BODY_BYTES
    assert post_raw(api_client, "/api/equity/orders", padded).status_code == 201


def test_nesting_at_the_limit_is_parsed_and_one_level_more_is_refused(api_client, equity_orders):
    equity_orders.MAX_JSON_DEPTH = 4
    at_limit = crypto_limit(bracket={"take_profit": [[35000]]})  # object > bracket > list > list: 4 levels
    resp = api_client.post("/api/equity/orders", at_limit, format="json")
    assert_error(resp, 400, "VALIDATION_ERROR")
    assert "bracket.take_profit" in resp.json()["errors"]  # parsed; the serializer refuses the field
    deeper = crypto_limit(bracket={"take_profit": [[[35000]]]})
    resp = api_client.post("/api/equity/orders", deeper, format="json")
    assert_error(resp, 400, "VALIDATION_ERROR")
    assert "nested deeper than 4 levels" in resp.json()["detail"]


def test_a_form_or_multipart_body_is_415_unsupported_media_type(api_client):
    form = api_client.post("/api/equity/orders", "qty=1", content_type="application/x-www-form-urlencoded")
    assert_error(form, 415, "UNSUPPORTED_MEDIA_TYPE")
    multipart = api_client.post("/api/equity/orders", {"qty": "1"}, format="multipart")
    assert_error(multipart, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_brackets_inside_strings_do_not_count_as_nesting():
    assert not nesting_depth_exceeds(json.dumps({"symbol": "[" * 100, "label": '\\"{{{{'}), 2)
    assert not nesting_depth_exceeds(json.dumps([["\\\"[[[["]]), 2)
    assert nesting_depth_exceeds(json.dumps([[["x"]]]), 2)
    assert nesting_depth_exceeds("[" * 3, 2)  # unbalanced: refused by depth before the decoder sees it


def test_invalid_utf8_and_non_standard_constants_are_400(api_client):
    assert_error(post_raw(api_client, "/api/equity/orders", b'{"qty": "\xff"}'), 400, "VALIDATION_ERROR")
    assert_error(post_raw(api_client, "/api/equity/orders", '{"qty": NaN}'), 400, "VALIDATION_ERROR")
