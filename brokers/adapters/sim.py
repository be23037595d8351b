"""SimAdapter: the built-in paper exchange (brokers/sim_exchange.py) behind BrokerAdapter.

Paper only, all three asset classes. Credentials: {} or {"starting_cash": "25000"} (a value
that is not a positive amount is refused like bad keys: CredentialsRefused). The simulator
account of a connection is created on its first use. Every call first expires the
account's due day orders (the simulator's expiry is lazy).
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from brokers import sim_exchange
from brokers.models import SimOrder
from brokers.types import (
    FINAL_STATUSES,
    OPEN_STATUSES,
    Account,
    AssetClass,
    BrokerOrder,
    Environment,
    Exchange,
    ListScope,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
)
from config.exceptions import BrokerNotConfigured, BrokerRejected, CredentialsRefused, OrderNotFound

logger = logging.getLogger(__name__)

CURRENCIES: dict[AssetClass, str] = {
    AssetClass.US_EQUITY: "USD",
    AssetClass.CRYPTO: "USD",
    AssetClass.KR_EQUITY: "KRW",
}


class SimAdapter:  # satisfies BrokerAdapter structurally
    exchange = Exchange.SIM
    SUPPORTED = frozenset({(ac, Environment.PAPER) for ac in AssetClass})
    CREDENTIAL_FIELDS: tuple[str, ...] = ()

    def __init__(self, *, credentials: dict, asset_class: AssetClass, live: bool, connection_id: int):
        if live:
            raise BrokerNotConfigured("The simulator is paper-only: there is no live sim connection.")
        self.asset_class = AssetClass(asset_class)
        self.currency = CURRENCIES[self.asset_class]
        self._connection_id = connection_id
        self._starting_cash_given = (credentials or {}).get("starting_cash")
        self._account_id: int | None = None

    # --- writes -----------------------------------------------------------------------------

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        placed = sim_exchange.place_order(account_id=self._account(), request=order)
        return _to_broker_order(placed)

    def cancel_order(self, broker_order_id: str, *, symbol: str | None = None) -> None:
        sim_exchange.cancel_order(account_id=self._account(), broker_order_id=broker_order_id)

    # --- reads ------------------------------------------------------------------------------

    def get_order(self, broker_order_id: str, *, symbol: str | None = None) -> BrokerOrder:
        found = self._orders().filter(broker_order_id=broker_order_id).first()
        if found is None:
            raise OrderNotFound(f"no simulator order {broker_order_id}")
        return _to_broker_order(found)

    def list_orders(self, *, scope: ListScope = ListScope.ALL, symbol: str | None = None,
                    since: datetime | None = None) -> list[BrokerOrder]:
        orders = self._orders()
        if scope == ListScope.OPEN:
            orders = orders.filter(status__in=[s.value for s in OPEN_STATUSES])
        elif scope == ListScope.CLOSED:
            orders = orders.filter(status__in=[s.value for s in FINAL_STATUSES])
        if symbol is not None:
            orders = orders.filter(symbol=symbol)
        if since is not None:
            orders = orders.filter(submitted_at__gte=since)
        return [_to_broker_order(o) for o in orders.order_by("-submitted_at", "-id")]

    def find_order(self, order: OrderRequest, *, submitted_at: datetime) -> BrokerOrder | None:
        found = self._orders().filter(broker_client_id=order.broker_client_id).first()
        return _to_broker_order(found) if found is not None else None

    def positions(self) -> list[Position]:
        account = sim_exchange.roll_day(account_id=self._account())
        return [Position(symbol=h.position.symbol, qty=h.position.qty, avg_entry_price=h.position.avg_entry_price,
                         current_price=h.price, unrealized_pnl=h.unrealized_pnl,
                         unrealized_pnl_pct=h.unrealized_pnl_pct, currency=self.currency)
                for h in sim_exchange.holdings(account=account)]

    def account(self) -> Account:
        account = sim_exchange.roll_day(account_id=self._account())
        return Account(equity=sim_exchange.equity_of(account=account), buying_power=account.buying_power,
                       cash=account.cash, currency=account.currency, as_of=timezone.now(),
                       last_equity=account.last_equity)

    def latest_price(self, symbol: str) -> Decimal:
        price = sim_exchange.get_quote(self.asset_class, symbol)
        if price is None:
            raise BrokerRejected(f"no simulator quote for {symbol}; set one with manage.py sim_quote")
        return price

    # --- internals --------------------------------------------------------------------------

    def _account(self) -> int:
        """The id of this connection's simulator account (created on first use), its due orders expired."""
        if self._account_id is None:
            self._account_id = sim_exchange.open_account(
                connection_id=self._connection_id, currency=self.currency, starting_cash=self._starting_cash()).pk
        sim_exchange.expire_due(account_id=self._account_id)
        return self._account_id

    def _orders(self):
        """The account's own orders; bracket legs are internal and never shown."""
        return SimOrder.objects.filter(account_id=self._account(), parent__isnull=True)

    def _starting_cash(self) -> Decimal:
        given = self._starting_cash_given
        if given in (None, ""):
            return settings.SIM_STARTING_CASH_KRW if self.currency == "KRW" else settings.SIM_STARTING_CASH_USD
        return sim_exchange.checked_amount("starting_cash", given, error=CredentialsRefused)


def _to_broker_order(order: SimOrder) -> BrokerOrder:
    return BrokerOrder(
        broker_order_id=order.broker_order_id, broker_client_id=order.broker_client_id, symbol=order.symbol,
        side=Side(order.side), qty=order.qty, filled_qty=order.filled_qty, avg_fill_price=order.avg_fill_price,
        order_type=OrderType(order.order_type), status=OrderStatus(order.status),
        submitted_at=order.submitted_at, updated_at=order.updated_at, limit_price=order.limit_price,
        stop_price=order.stop_price, stop_limit_price=order.stop_limit_price,
        time_in_force=TimeInForce(order.time_in_force))
