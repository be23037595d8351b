"""Every /api/ answer is JSON with the envelope; schema and docs are served offline."""

from __future__ import annotations

import pytest

from tests.equity.helpers import ORDER_FIELDS, assert_error

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("debug", [True, False])
def test_an_unroutable_api_path_is_a_json_404(api_client, settings, debug):
    settings.DEBUG = debug
    resp = api_client.get("/api/equity/orders/0.5/extra")
    assert resp["Content-Type"].startswith("application/json")
    assert_error(resp, 404, "NOT_FOUND")


def test_an_unexpected_exception_is_a_500_envelope_without_traceback(api_client, monkeypatch):
    from equity import selectors

    def boom(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(selectors, "positions_for_user", boom)
    client = api_client
    client.raise_request_exception = False
    resp = client.get("/api/equity/positions", {"asset_class": "crypto"})
    assert_error(resp, 500, "INTERNAL_ERROR")
    assert b"secret internals" not in resp.content and b"Traceback" not in resp.content


def test_schema_uses_the_spec_component_names(api_client):
    resp = api_client.get("/api/schema", HTTP_ACCEPT="application/json")
    assert resp.status_code == 200
    schemas = resp.json()["components"]["schemas"]
    for name in ("PlaceOrderRequest", "BracketSpec", "OrderResponse", "OrderListResponse", "PositionListResponse",
                 "AccountResponse", "Error"):
        assert name in schemas, sorted(schemas)
    assert not any(n.endswith("RequestRequest") for n in schemas)


def test_schema_documents_bracket_legs_in_metadata_as_order_responses_and_their_parent_order_id(api_client):
    schemas = api_client.get("/api/schema", HTTP_ACCEPT="application/json").json()["components"]["schemas"]
    assert set(schemas["OrderResponse"]["properties"]) == ORDER_FIELDS  # exactly the source's fields
    meta = schemas["OrderMetadata"]["properties"]
    legs, parent = meta["legs"], meta["parent_order_id"]
    assert legs["type"] == "array" and legs["items"] == {"$ref": "#/components/schemas/OrderResponse"}
    assert "take-profit" in legs["description"] and "stop-loss" in legs["description"]
    assert parent["type"] == "string" and ":tp" in parent["description"]


def test_docs_render_from_local_static_files_not_a_cdn(api_client):
    resp = api_client.get("/api/docs")
    assert resp.status_code == 200 and b"swagger-ui" in resp.content
    assert b"cdn.jsdelivr" not in resp.content and b"unpkg.com" not in resp.content


def test_tokens_live_15_minutes_and_refresh_1_day(client, user):
    import jwt

    pair = client.post("/api/auth/token", {"username": "alice", "password": "pass-1234-word"},
                       content_type="application/json").json()
    access = jwt.decode(pair["access"], options={"verify_signature": False})
    refresh = jwt.decode(pair["refresh"], options={"verify_signature": False})
    assert access["exp"] - access["iat"] == 15 * 60 and refresh["exp"] - refresh["iat"] == 24 * 3600
    again = client.post("/api/auth/token/refresh", {"refresh": pair["refresh"]}, content_type="application/json")
    assert again.status_code == 200 and again.json()["access"]


def test_wrong_password_is_401_with_the_envelope(client, user):
    resp = client.post("/api/auth/token", {"username": "alice", "password": "nope"}, content_type="application/json")
    assert_error(resp, 401, "NOT_AUTHENTICATED")


def test_an_invalid_token_detail_is_a_plain_sentence(client, db):
    resp = client.get("/api/equity/orders?asset_class=crypto", HTTP_AUTHORIZATION="Bearer not-a-token")
    body = assert_error(resp, 401, "NOT_AUTHENTICATED")
    assert body["detail"] == "Given token not valid for any token type"


def test_place_order_request_requires_only_the_spec_required_fields(api_client):
    schema = api_client.get("/api/schema", HTTP_ACCEPT="application/json").json()
    required = set(schema["components"]["schemas"]["PlaceOrderRequest"]["required"])
    assert required == {"asset_class", "symbol", "side", "qty", "order_type"}
