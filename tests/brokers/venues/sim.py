"""The simulator venue: the engine runs on the test database itself, so there is nothing to fake."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.contrib.auth import get_user_model

from brokers.models import BrokerAccount
from brokers.registry import build_adapter
from brokers.sim_exchange import set_quote
from brokers.types import AssetClass, TimeInForce


class Venue:
    asset_class = AssetClass.CRYPTO
    symbol = "BTC/USD"
    qty = Decimal("0.01")
    price = Decimal("50000")
    price_below_market = Decimal("30000")
    price_above_market = Decimal("70000")
    currency = "USD"
    time_in_force = TimeInForce.GTC
    market_time_in_force = TimeInForce.GTC
    supports_stop = True
    unknown_order_id = "sim-00000000000000000000000000000000"

    def __enter__(self) -> Venue:
        user = get_user_model().objects.create_user(f"sim-venue-{uuid.uuid4().hex[:8]}")
        self.connection = BrokerAccount.objects.create(user=user, asset_class=self.asset_class, exchange="sim",
                                                       environment="paper", credentials={})
        set_quote(self.asset_class, self.symbol, self.price)
        self.adapter = build_adapter(self.connection)
        return self

    def __exit__(self, *exc) -> None:
        return None
