"""The one interface every broker adapter satisfies (structurally)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from brokers.conf import conf

from brokers.types import Account, BrokerOrder, ListScope, OrderRequest, Position


class BrokerAdapter(Protocol):
    """One broker account of one user, in one environment.

    Errors (brokers.errors): timeouts, connection errors, 5xx -> BrokerUnavailable (on
    place_order, BrokerOutcomeUnknown when the request may have reached the broker); a refusal ->
    BrokerRejected or InsufficientFunds; an unknown order -> OrderNotFound; keys refused ->
    CredentialsRefused. A placement refused because its client id is already used returns the
    order under that id, or raises DuplicateClientId (a BrokerOutcomeUnknown) when the broker does
    not show it yet: never BrokerRejected. Nothing else escapes an adapter.

    Bracket legs (where a broker has them): an order's BrokerOrder carries its legs (place_order,
    get_order, find_order and list_orders, which lists the legs nested in their parent, not on their
    own); get_order and cancel_order take a leg's own id too.
    """

    exchange: str  # an Exchange value
    currency: str  # the account's currency for this asset class
    # True when the broker enforces our broker_client_id as unique per account (Alpaca
    # client_order_id, Upbit identifier, the simulator's constraint): sending an order again under
    # the same id can never make a second order, so after a lost answer the service re-sends it.
    client_ids: bool

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

        Returns the order, or None when the broker does not show it now. None is NEVER proof that
        it was not placed (a broker may be slow to show an order it has just accepted): only
        absence_settled() says when a lookup that still finds nothing settles it. Raises
        BrokerUnavailable when the lookup itself fails.
        """
        ...

    def absence_settled(self, *, submitted_at: datetime, now: datetime) -> bool:
        """True once the broker's own records prove that an order sent at submitted_at and still not
        found by find_order was never placed."""
        ...

    def latest_price(self, symbol: str) -> Decimal:
        """The last trade price, for the risk rules' entry of a market order."""
        ...


def absent_after() -> timedelta:
    """How long after its last send an order of a client-id broker that is still not found is absent."""
    return timedelta(seconds=conf.BROKER_ABSENT_AFTER_SECONDS)


class UniqueClientIds:
    """For a broker that enforces our client id as unique (mixed into the adapter class).

    The id makes a re-send safe, and a lookup by it is exact; what it cannot tell at once is
    absence, since the lookup may lag. Once BROKER_ABSENT_AFTER_SECONDS have passed since the last
    send, far beyond any lag, a lookup that still finds nothing settles it.
    """

    client_ids = True

    def absence_settled(self, *, submitted_at: datetime, now: datetime) -> bool:
        return now - submitted_at >= absent_after()
