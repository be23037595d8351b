"""The one interface every broker adapter satisfies (structurally)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Protocol

from brokers.types import Account, BrokerOrder, ListScope, OrderRequest, Position


class BrokerAdapter(Protocol):
    """One broker account of one user, in one environment.

    Errors (brokers.errors): timeouts, connection errors, 5xx -> BrokerUnavailable (on
    place_order, BrokerOutcomeUnknown when the request may have reached the broker); a refusal ->
    BrokerRejected or InsufficientFunds; an unknown order -> OrderNotFound; keys refused ->
    CredentialsRefused. Nothing else escapes an adapter.

    Bracket legs (where a broker has them): an order's BrokerOrder carries its legs (place_order,
    get_order, find_order and list_orders, which lists the legs nested in their parent, not on their
    own); get_order and cancel_order take a leg's own id too.
    """

    exchange: str  # an Exchange value
    currency: str  # the account's currency for this asset class

    def place_order(self, order: OrderRequest) -> BrokerOrder: ...

    def cancel_order(self, broker_order_id: str, *, symbol: str | None = None) -> None: ...

    def get_order(self, broker_order_id: str, *, symbol: str | None = None) -> BrokerOrder: ...

    def list_orders(self, *, scope: ListScope = ListScope.ALL, symbol: str | None = None,
                    since: datetime | None = None) -> list[BrokerOrder]: ...

    def positions(self) -> list[Position]: ...

    def account(self) -> Account: ...

    # Needed by the spec beyond the six reads and writes:
    def find_order(self, order: OrderRequest, *, submitted_at: datetime) -> BrokerOrder | None:
        """Look up an order whose placement outcome is unknown.

        Returns the order, or None when it is proven that the broker never placed it; raises
        BrokerUnavailable when it cannot decide (the broker still fails, or no way to match yet).
        """
        ...

    def latest_price(self, symbol: str) -> Decimal:
        """The last trade price, for the risk rules' entry of a market order."""
        ...
