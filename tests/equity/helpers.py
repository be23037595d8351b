from __future__ import annotations

ORDER_FIELDS = {"order_id", "broker_order_id", "client_order_id", "asset_class", "exchange", "symbol", "side", "qty",
                "filled_qty", "avg_fill_price", "order_type", "limit_price", "stop_price", "status", "currency",
                "submitted_at", "updated_at", "bracket", "metadata"}  # exactly the source's (a bracket's legs: metadata)


def crypto_limit(**overrides) -> dict:
    body = {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.01, "order_type": "limit",
            "limit_price": 30000, "time_in_force": "gtc"}
    body.update(overrides)
    return body


def crypto_market(**overrides) -> dict:
    body = {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.01, "order_type": "market"}
    body.update(overrides)
    return body


def place(client, body):
    return client.post("/api/equity/orders", body, format="json")


def assert_error(resp, status, code):
    assert resp.status_code == status, resp.content[:500]
    body = resp.json()
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body
