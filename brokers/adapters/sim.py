"""SimAdapter: the built-in paper exchange (brokers/sim_exchange.py) behind BrokerAdapter.

Paper only, all three asset classes. Credentials: {} or {"starting_cash": "25000"} (a value
that is not a positive amount is refused like bad keys: CredentialsRefused). The simulator
account of a connection is created on its first use. Every call first expires the
account's due day orders (the simulator's expiry is lazy).

Round trips (bench/README.md, "what the profile showed"): one adapter serves one request, so it
keeps what it learnt from its last look at the account for at most EXPIRY_RECHECK: the account
id and when its next open order expires. A call within that window, before that time, skips the
expiry check (nothing of the account's was due, and nothing placed through this adapter is);
every other call checks again. The account row itself is read fresh by every account() call.

account() and positions() read the account row, its next open expiry and its holdings (positions
at their quotes) in one statement (sim_exchange.account_snapshot), so they check the expiry on
every call at no cost; equity is computed from those holdings as sim_exchange.equity_of does.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal

from brokers.conf import conf
from django.utils import timezone

from brokers import sim_exchange
from brokers.base import UniqueClientIds
from brokers.models import SimAccount, SimOrder
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
from brokers.errors import BrokerNotConfigured, BrokerRejected, CredentialsRefused, OrderNotFound

logger = logging.getLogger(__name__)

# How long a look at the account's expiries stays good for this adapter (see the module docstring).
EXPIRY_RECHECK = timedelta(seconds=1)

CURRENCIES: dict[AssetClass, str] = {
    AssetClass.US_EQUITY: "USD",
    AssetClass.CRYPTO: "USD",
    AssetClass.KR_EQUITY: "KRW",
}


class SimAdapter(UniqueClientIds):  # satisfies BrokerAdapter structurally
    """client_ids: unique_sim_client_id makes a re-send under the same broker_client_id return the first order."""

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
        self._checked_at: datetime | None = None  # the last expiry check: when, and what it found
        self._next_expiry: datetime | None = None

    # --- writes -----------------------------------------------------------------------------

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        placed = sim_exchange.place_order(account_id=self._account(), request=order, asset_class=self.asset_class)
        if placed.expires_at is not None and placed.status in OPEN_VALUES and (
                self._next_expiry is None or placed.expires_at < self._next_expiry):
            self._next_expiry = placed.expires_at
        return _with_legs(placed)

    def cancel_order(self, broker_order_id: str, *, symbol: str | None = None) -> None:
        sim_exchange.cancel_order(account_id=self._account(), broker_order_id=broker_order_id)

    # --- reads ------------------------------------------------------------------------------

    def get_order(self, broker_order_id: str, *, symbol: str | None = None) -> BrokerOrder:
        """An order or a bracket leg by its id; a bracket parent carries its legs."""
        found = SimOrder.objects.filter(account_id=self._account(), broker_order_id=broker_order_id).first()
        if found is None:
            raise OrderNotFound(f"no simulator order {broker_order_id}")
        return _with_legs(found)

    def list_orders(self, *, scope: ListScope = ListScope.ALL, symbol: str | None = None,
                    since: datetime | None = None) -> list[BrokerOrder]:
        orders = self._orders()
        if scope == ListScope.OPEN:
            orders = orders.filter(status__in=OPEN_VALUES)
        elif scope == ListScope.CLOSED:
            orders = orders.filter(status__in=[s.value for s in FINAL_STATUSES])
        if symbol is not None:
            orders = orders.filter(symbol=symbol)
        if since is not None:
            orders = orders.filter(submitted_at__gte=since)
        # Plain rows, not model instances: a listing can be long, and an instance costs more than
        # the BrokerOrder made from it. Legs come nested in their parent (as Alpaca's nested=true
        # listing has them): one more query, only when the listing holds a bracket order.
        rows = list(orders.order_by("-submitted_at", "-id").values_list("pk", "take_profit", *_ORDER_COLUMNS))
        brackets = [pk for pk, take_profit, *row in rows
                    if take_profit is not None and row[_STATUS_COLUMN] == OrderStatus.FILLED]
        legs = _legs_of(brackets) if brackets else {}
        return [_row_to_broker_order(tuple(row), legs=legs.get(pk, ())) for pk, _, *row in rows]

    def find_order(self, order: OrderRequest, *, submitted_at: datetime) -> BrokerOrder | None:
        """The order under our broker_client_id, or None (the simulator never lags, but None still only
        means "not shown now", as for every adapter)."""
        found = self._orders().filter(broker_client_id=order.broker_client_id).first()
        return _with_legs(found) if found is not None else None

    def positions(self) -> list[Position]:
        _, held = self._snapshot()
        return [Position(symbol=h.position.symbol, qty=h.position.qty, avg_entry_price=h.position.avg_entry_price,
                         current_price=h.price, unrealized_pnl=h.unrealized_pnl,
                         unrealized_pnl_pct=h.unrealized_pnl_pct, currency=self.currency)
                for h in held]

    def account(self) -> Account:
        read, held = self._snapshot()
        account = sim_exchange.roll_day(account=read, asset_class=self.asset_class)
        if account is not read:  # a new UTC day: roll_day read the account again, locked; so are its holdings
            held = sim_exchange.holdings(account=account, asset_class=self.asset_class)
        return Account(equity=sim_exchange.equity_from(account.cash, held),
                       buying_power=account.buying_power, cash=account.cash, currency=account.currency,
                       as_of=timezone.now(), last_equity=account.last_equity)

    def latest_price(self, symbol: str) -> Decimal:
        price = sim_exchange.get_quote(self.asset_class, symbol)
        if price is None:
            raise BrokerRejected(f"no simulator quote for {symbol}; set one with manage.py sim_quote")
        return price

    # --- internals --------------------------------------------------------------------------

    def _account(self) -> int:
        """The id of this connection's simulator account (created on first use), its due orders expired."""
        now = timezone.now()
        if (self._account_id is not None and self._checked_at is not None
                and timedelta(0) <= now - self._checked_at < EXPIRY_RECHECK
                and (self._next_expiry is None or now < self._next_expiry)):
            return self._account_id
        return self._fresh_account().pk

    def _fresh_account(self) -> SimAccount:
        """The account row read now (created on first use), its due orders expired first: one query
        when none is due."""
        return self._fresh(sim_exchange.account_with_next_expiry, lambda found: found)

    def _snapshot(self) -> tuple[SimAccount, list[sim_exchange.Holding]]:
        """As _fresh_account, with the account's holdings read in the same statement."""
        def read(**lookup):
            return sim_exchange.account_snapshot(asset_class=self.asset_class, **lookup)
        return self._fresh(read, lambda found: found[0])

    def _fresh(self, read, account_of):
        """read(pk= or connection_id=) now (the account created on first use; None: no account),
        again after expiring the account's due orders when its next expiry (account_of(found)
        .next_expiry) has come; what this learnt is kept for _account()."""
        lookup = {"pk": self._account_id} if self._account_id is not None else {"connection_id": self._connection_id}
        found = read(**lookup)
        if found is None:
            sim_exchange.open_account(connection_id=self._connection_id, currency=self.currency,
                                      starting_cash=self._starting_cash())
            found = read(connection_id=self._connection_id)
        account = account_of(found)
        now = timezone.now()
        if account.next_expiry is not None and account.next_expiry <= now:
            sim_exchange.expire_due(account_id=account.pk)
            found = read(pk=account.pk)
            account = account_of(found)
        self._account_id, self._checked_at, self._next_expiry = account.pk, now, account.next_expiry
        return found

    def _orders(self):
        """The account's orders as placed; bracket legs are shown nested in their parent."""
        return SimOrder.objects.filter(account_id=self._account(), parent__isnull=True)

    def _starting_cash(self) -> Decimal:
        given = self._starting_cash_given
        if given in (None, ""):
            return conf.SIM_STARTING_CASH_KRW if self.currency == "KRW" else conf.SIM_STARTING_CASH_USD
        return sim_exchange.checked_amount("starting_cash", given, error=CredentialsRefused)


OPEN_VALUES = [s.value for s in OPEN_STATUSES]
_SIDES = {s.value: s for s in Side}
_TYPES = {t.value: t for t in OrderType}
_STATUSES = {s.value: s for s in OrderStatus}
_TIFS = {t.value: t for t in TimeInForce}
_ORDER_COLUMNS = ("broker_order_id", "broker_client_id", "symbol", "side", "qty", "filled_qty", "avg_fill_price",
                  "order_type", "status", "submitted_at", "updated_at", "limit_price", "stop_price",
                  "stop_limit_price", "time_in_force")
_STATUS_COLUMN = _ORDER_COLUMNS.index("status")


def _legs_of(parent_ids: list[int]) -> dict[int, tuple[BrokerOrder, ...]]:
    """The bracket legs of these simulator orders, by parent id, take-profit first (created first)."""
    legs: dict[int, list[BrokerOrder]] = {}
    for parent_id, *row in (SimOrder.objects.filter(parent_id__in=parent_ids).order_by("id")
                            .values_list("parent_id", *_ORDER_COLUMNS)):
        legs.setdefault(parent_id, []).append(_row_to_broker_order(tuple(row)))
    return {parent_id: tuple(found) for parent_id, found in legs.items()}


def _with_legs(order: SimOrder) -> BrokerOrder:
    """The order; a filled bracket parent with its legs (one more query; legs exist only once it fills)."""
    has_legs = order.take_profit is not None and order.status == OrderStatus.FILLED
    return _to_broker_order(order, legs=_legs_of([order.pk]) if has_legs else None)


def _to_broker_order(order: SimOrder, *, legs: dict[int, tuple[BrokerOrder, ...]] | None = None) -> BrokerOrder:
    return _row_to_broker_order(tuple(getattr(order, c) for c in _ORDER_COLUMNS),
                                legs=(legs or {}).get(order.pk, ()))


def _row_to_broker_order(row: tuple, *, legs: tuple[BrokerOrder, ...] = ()) -> BrokerOrder:
    (broker_order_id, broker_client_id, symbol, side, qty, filled_qty, avg_fill_price, order_type, status,
     submitted_at, updated_at, limit_price, stop_price, stop_limit_price, time_in_force) = row
    return BrokerOrder(
        broker_order_id=broker_order_id, broker_client_id=broker_client_id, symbol=symbol, side=_SIDES[side],
        qty=qty, filled_qty=filled_qty, avg_fill_price=avg_fill_price, order_type=_TYPES[order_type],
        status=_STATUSES[status], submitted_at=submitted_at, updated_at=updated_at, limit_price=limit_price,
        stop_price=stop_price, stop_limit_price=stop_limit_price, time_in_force=_TIFS[time_in_force], legs=legs)
