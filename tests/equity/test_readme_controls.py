"""The README's walk-through of the trader controls (steps 7 to 11) does what it says."""

from __future__ import annotations

import pytest

from brokers.sim_exchange import set_quote
from tests.equity.helpers import assert_error, crypto_limit, crypto_market, place

pytestmark = pytest.mark.django_db


def test_check_halt_try_release_cancel_all_as_the_readme_shows(api_client, sim_crypto):
    assert place(api_client, crypto_market(qty=0.02)).status_code == 201  # step 5
    set_quote("crypto", "BTC/USD", "51000")  # step 6
    resting = place(api_client, crypto_limit()).json()

    what_if = api_client.post("/api/equity/orders/check", crypto_market(qty=1), format="json").json()  # step 7
    assert (what_if["would_place"], what_if["code"]) == (False, "RISK_RULE_VIOLATION")
    assert what_if["detail"].startswith("trade_risk: ")
    trade_risk = what_if["checks"][-1]
    assert trade_risk["name"] == "trade_risk" and 0.39 <= trade_risk["max_qty"] < 0.4
    assert [c["name"] for c in what_if["checks"]][:2] == ["feature_flag", "rate_limit"]

    halted = api_client.put("/api/equity/kill-switch", {"mode": "halted", "asset_class": None,  # step 8
                                                        "reason": "stepping away", "cancel_open": True},
                            format="json").json()
    assert (halted["mode"], halted["scope"], halted["set_by"]) == ("halted", "user", "alice")
    assert halted["cancel_all"] == {"canceled": [resting["order_id"]], "failed": []}

    body = assert_error(place(api_client, crypto_market()), 403, "TRADING_HALTED")  # step 9
    assert body["detail"] == ("kill_switch: trading is halted (your switch for all asset classes), set by alice: "
                              "stepping away; no order is placed")

    assert api_client.delete("/api/equity/kill-switch").status_code == 204  # step 10
    assert api_client.get("/api/equity/kill-switch").json() == {"items": []}
    again = place(api_client, crypto_limit()).json()
    assert api_client.delete("/api/equity/orders?asset_class=crypto").json() == {  # step 11
        "canceled": [again["order_id"]], "failed": []}
