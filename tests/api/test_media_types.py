"""A body that is not JSON on a JSON-only route is 415 UNSUPPORTED_MEDIA_TYPE naming the type to send.

curl without `-H 'Content-Type: application/json'` sends a form; it used to reach the serializer as one
field named after the whole JSON text ("Unknown field"). The browsable API keeps its forms.
"""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from audit.models import BrokerOrderEvent
from equity.models import Order
from tests.equity.helpers import assert_error, crypto_market

pytestmark = pytest.mark.django_db

CURL_FORM = "application/x-www-form-urlencoded"


def curl_without_content_type(client, path: str, body: dict):
    """What `curl -d '{...}'` sends: the JSON text as a form body."""
    return client.generic("POST", path, json.dumps(body), content_type=CURL_FORM)


def test_an_order_sent_as_a_form_is_415_naming_application_json(api_client, sim_crypto):
    resp = curl_without_content_type(api_client, "/api/equity/orders", crypto_market())
    body = assert_error(resp, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert set(body) == {"code", "detail"}
    assert "Content-Type: application/json" in body["detail"]
    assert CURL_FORM in body["detail"]
    assert "Unknown field" not in body["detail"]


def test_a_refused_form_body_places_nothing_and_is_not_counted(api_client, sim_crypto, equity_orders):
    equity_orders.RATE_LIMIT_ORDERS = "1/m"
    assert_error(curl_without_content_type(api_client, "/api/equity/orders", crypto_market()), 415,
                 "UNSUPPORTED_MEDIA_TYPE")
    assert not Order.objects.exists() and not BrokerOrderEvent.objects.exists()
    # the one order the limit allows is still there: the 415 never reached gate 2
    assert api_client.post("/api/equity/orders", crypto_market(), format="json").status_code == 201


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=xyz", "text/plain"])
def test_other_non_json_bodies_are_415_too(api_client, sim_crypto, content_type):
    resp = api_client.generic("POST", "/api/equity/orders", json.dumps(crypto_market()), content_type=content_type)
    assert_error(resp, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_a_broker_connection_sent_as_a_form_is_415(api_client):
    resp = curl_without_content_type(api_client, "/api/brokers/accounts",
                                     {"asset_class": "crypto", "exchange": "sim", "environment": "paper"})
    assert_error(resp, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_the_same_body_as_json_is_placed(api_client, sim_crypto):
    resp = api_client.generic("POST", "/api/equity/orders", json.dumps(crypto_market()),
                              content_type="application/json")
    assert resp.status_code == 201, resp.content


def test_the_schema_documents_json_bodies_only(api_client):
    schema = api_client.get("/api/schema", HTTP_ACCEPT="application/json").json()
    for path in ("/api/equity/orders", "/api/brokers/accounts"):
        assert list(schema["paths"][path]["post"]["requestBody"]["content"]) == ["application/json"]


def test_the_browsable_api_offers_a_json_form(api_client, sim_crypto):
    resp = api_client.get("/api/equity/orders", {"asset_class": "crypto"}, HTTP_ACCEPT="text/html")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert 'value="application/json"' in html
    assert f'value="{CURL_FORM}"' not in html


def test_the_browsable_api_offers_no_form_that_would_be_refused(user):
    """The login route takes JSON only (bounded, brokers/parsers.py), so the browsable API offers its
    JSON form there and no HTML form that would post a refused form body; the JSON login works."""
    client = APIClient()
    page = client.get("/api/auth/token", HTTP_ACCEPT="text/html").content.decode()
    assert 'value="application/json"' in page and f'value="{CURL_FORM}"' not in page
    assert 'enctype="multipart/form-data"' not in page
    assert_error(client.post("/api/auth/token", {"username": "alice", "password": "pass-1234-word"},
                             format="multipart"), 415, "UNSUPPORTED_MEDIA_TYPE")
    resp = client.post("/api/auth/token", {"username": "alice", "password": "pass-1234-word"}, format="json")
    assert resp.status_code == 200 and resp.json()["access"]
