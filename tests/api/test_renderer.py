"""The apps' JSON renderer (brokers.renderers.OrjsonJSONRenderer) writes the bytes DRF's JSONRenderer
writes, for the apps' responses and for the values they can hold, and does it with orjson."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer

from brokers import renderers
from brokers.api import AppViewPolicy
from brokers.renderers import OrjsonJSONRenderer
from brokers.sim_exchange import set_quote
from tests.equity.helpers import crypto_limit, crypto_market, place

Q = {"asset_class": "crypto"}
KST = dt.timezone(dt.timedelta(hours=9))


def _nested(depth):
    value = [1]
    for _ in range(depth):
        value = [value]
    return value


def _same(data, accepted="application/json", context=None):
    ours = OrjsonJSONRenderer().render(data, accepted, context or {})
    assert ours == JSONRenderer().render(data, accepted, context or {})
    return ours


@pytest.mark.parametrize("value", [
    Decimal("0.01"), Decimal("40000"), Decimal("40000.000"), Decimal("0.0000012300"), Decimal("1E-10"),
    Decimal("0.00005"), Decimal("123456789012.1234567891"), Decimal("1E+16"), Decimal("-0"), Decimal("99999999999999999"),
    0.1, 1e-05, 9.999e-05, 0.0001, 1e-07, 1e16, 1e22, 123456789.125, -0.0, 5e-324, 1.7976931348623157e308,
    0, -1, 2**63 - 1, 2**64, -(2**70), True, False, None, "", "plain",
    "é ü 한국어 😀", "\u2028 and \u2029", "\x00\x01\x1f\x7f\b\f\n\r\t\"\\/", "1e5 inside a string", ":1e5,", "e5]",
    ":0.00001", "2026-01-02T03:04:10.000012Z",
    dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC),
    dt.datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=KST), dt.datetime(2026, 1, 2, 3, 4, 5), dt.date(2026, 1, 2),
    dt.time(9, 30), dt.time(9, 30, 0, 1), dt.timedelta(seconds=90.5), uuid.UUID(int=12345), b"bytes",
    gettext_lazy("lazy text"), (1, "a"), [], {}, {"nested": {"deeper": [Decimal("1.5"), None, {"x": 1e-06}]}},
])
def test_each_kind_of_value_renders_as_drf_renders_it(value):
    _same(value)
    _same({"value": value, "list": [value, value], "after": 1})


def test_dict_order_unicode_keys_and_separators_are_drfs():
    _same({"z": 1, "a": 2, "한": {"é": [1, 2]}, "m": None})


@pytest.mark.parametrize("value", [{1: "int key"}, {Decimal("1"): "x"}, "lone \ud800 surrogate", {"n": 2**65},
                                   dt.time(9, 30, tzinfo=dt.UTC), object(), Decimal("NaN"), Decimal("Infinity"),
                                   _nested(300)])
def test_what_orjson_refuses_is_drfs_answer_or_drfs_exception(value):
    try:
        expected = JSONRenderer().render(value)
    except Exception as drf_error:  # noqa: BLE001 - whichever DRF raises, ours raises the same
        with pytest.raises(type(drf_error)):
            OrjsonJSONRenderer().render(value)
    else:
        assert OrjsonJSONRenderer().render(value) == expected


def test_a_dataclass_is_refused_as_drf_refuses_it():
    @dataclass
    class Point:
        x: int

    with pytest.raises(TypeError):
        JSONRenderer().render({"p": Point(1)})
    with pytest.raises(TypeError):
        OrjsonJSONRenderer().render({"p": Point(1)})


def test_indented_and_empty_renderings_are_drfs():
    data = {"a": [1, Decimal("2.5")], "b": "é"}
    _same(data, "application/json; indent=4")
    _same(data, "application/json", {"indent": 2})
    _same(None)
    assert OrjsonJSONRenderer.media_type == "application/json" and OrjsonJSONRenderer.format == "json"


def test_a_plain_order_page_is_encoded_by_orjson_without_drfs_encoder(monkeypatch):
    page = {"items": [{"order_id": "a", "qty": Decimal("0.00005"), "limit_price": Decimal("40000"),
                       "avg_fill_price": None, "submitted_at": "2026-01-02T03:04:05.678901Z",
                       "metadata": {"stop_limit_price": 40100.5, "legs": []}}] * 20,
            "total": 20, "page": 1, "size": 20}
    expected = JSONRenderer().render(page)

    def refuse(*args, **kwargs):
        raise AssertionError("fell back to DRF's renderer")

    monkeypatch.setattr(JSONRenderer, "render", refuse)
    assert OrjsonJSONRenderer().render(page) == expected


def test_the_apps_views_render_json_with_it_and_keep_the_browsable_api(api_client, sim_crypto):
    assert AppViewPolicy.renderer_classes[0] is OrjsonJSONRenderer
    place(api_client, crypto_limit())
    resp = api_client.get("/api/equity/orders", Q)
    assert isinstance(resp.accepted_renderer, OrjsonJSONRenderer)
    html = api_client.get("/api/equity/orders", Q, HTTP_ACCEPT="text/html")
    assert html.status_code == 200 and html["Content-Type"].startswith("text/html")
    assert b"BTC/USD" in html.content


@pytest.mark.django_db
def test_every_route_answers_the_bytes_drfs_renderer_writes(api_client, sim_crypto, monkeypatch):
    """Orders with decimals, nulls, a bracket's nested legs and a stop-limit's metadata; positions and the
    account; a validation error with the caller's unicode echoed; a 404."""
    responses = [place(api_client, crypto_limit()), place(api_client, crypto_market(qty=0.00005)),
                 place(api_client, crypto_limit(order_type="stop_limit", stop_price=52000, limit_price=52500)),
                 place(api_client, crypto_limit(limit_price=45000, client_order_id="br",
                                                bracket={"take_profit": 52000, "stop_loss": 44000}))]
    set_quote("crypto", "BTC/USD", "44900")
    responses += [api_client.get("/api/equity/orders", {**Q, "size": 100}),
                  api_client.get("/api/equity/orders/br", Q),
                  api_client.get("/api/equity/positions", Q), api_client.get("/api/equity/account", Q),
                  place(api_client, crypto_limit(symbol="비트코인/USD\u2028", qty="x")),
                  api_client.get("/api/equity/orders/nope", Q)]
    assert {r.status_code for r in responses} >= {200, 201, 400, 404}
    seen = 0
    for resp in responses:
        assert isinstance(resp.accepted_renderer, OrjsonJSONRenderer)
        assert resp.content == JSONRenderer().render(resp.data), resp.content[:300]
        seen += b"legs" in resp.content
    assert seen


def test_the_exponent_check_matches_every_float_orjson_writes_otherwise():
    """orjson and Python write a float differently only where Python uses an exponent; each such case is
    caught by the check, and none of Python's own forms (the Decimals') is."""
    import json
    import random
    import struct

    import orjson

    rng = random.Random(17)
    floats = [float(f"{m}e{e}") for e in range(-30, 30) for m in (1, 1.5, 3.14159, 9.99)]
    floats += [struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0] for _ in range(20000)]
    for f in floats:
        if f != f or f in (float("inf"), float("-inf")):
            continue
        for data in ([f], {"k": f}, f, [f, 1]):
            theirs, python = orjson.dumps(data), json.dumps(data, separators=(",", ":")).encode()
            if theirs != python:
                assert renderers.orjson_float_may_differ(theirs), (f, theirs, python)
            assert not renderers.orjson_float_may_differ(python), python
