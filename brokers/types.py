"""Our own types at the broker boundary. Adapters take and return only these.

No broker's wire format (alpaca-py models, KIS/Upbit JSON, epoch stamps) passes this line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class AssetClass(StrEnum):
    CRYPTO = "crypto"
    US_EQUITY = "us_equity"
    KR_EQUITY = "kr_equity"


class Exchange(StrEnum):
    ALPACA = "alpaca"
    KIS = "kis"
    UPBIT = "upbit"
    SIM = "sim"


class Environment(StrEnum):
    PAPER = "paper"
    LIVE = "live"


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class OrderStatus(StrEnum):
    PENDING = "pending"  # sent, not yet acknowledged, or outcome unknown
    ACCEPTED = "accepted"  # live at the broker
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED})
OPEN_STATUSES = frozenset({OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED})


class ListScope(StrEnum):
    """Which orders a broker listing asks for."""

    OPEN = "open"
    CLOSED = "closed"
    ALL = "all"


@dataclass(frozen=True)
class Bracket:
    take_profit: Decimal
    stop_loss: Decimal
    stop_loss_limit: Decimal | None = None


@dataclass(frozen=True)
class OrderRequest:
    """An order as the broker layer sees it.

    A stop_limit order is collapsed to order_type STOP carrying stop_limit_price (SPEC.md):
    an adapter whose broker has native stop-limit orders sends one from it.
    broker_client_id is the service's own UUID hex for this attempt (Alpaca client_order_id,
    Upbit identifier), never the user's idempotency key.
    """

    asset_class: AssetClass
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType  # MARKET, LIMIT or STOP (never STOP_LIMIT at this layer)
    time_in_force: TimeInForce
    broker_client_id: str
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_limit_price: Decimal | None = None
    bracket: Bracket | None = None


@dataclass(frozen=True)
class BrokerOrder:
    """A broker's view of one order, normalized."""

    broker_order_id: str
    broker_client_id: str | None
    symbol: str
    side: Side
    qty: Decimal
    filled_qty: Decimal
    avg_fill_price: Decimal | None
    order_type: OrderType  # STOP with stop_limit_price set means stop-limit
    status: OrderStatus
    submitted_at: datetime  # aware UTC
    updated_at: datetime  # aware UTC
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_limit_price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    # A bracket order's exit orders, once the broker shows them (the simulator: after the entry
    # fills; Alpaca: at once, "held" until then): the take-profit is the LIMIT leg, the stop-loss the
    # STOP leg (with stop_limit_price for a stop-limit). Empty for every other order and for the legs.
    legs: tuple[BrokerOrder, ...] = ()


@dataclass(frozen=True)
class Position:
    symbol: str  # in the order-symbol form (Alpaca crypto: BTC/USD, not BTCUSD)
    qty: Decimal  # signed: negative for a short
    avg_entry_price: Decimal
    current_price: Decimal
    unrealized_pnl: Decimal
    unrealized_pnl_pct: Decimal  # a fraction: 0.0154 means 1.54 %
    currency: str
    metadata: dict = field(default_factory=dict)

    @property
    def side(self) -> str:
        return "SHORT" if self.qty < 0 else "LONG"


@dataclass(frozen=True)
class Account:
    equity: Decimal
    buying_power: Decimal
    cash: Decimal
    currency: str
    as_of: datetime  # aware UTC
    last_equity: Decimal | None = None  # equity at the start of the trading day, where the broker has it
    metadata: dict = field(default_factory=dict)
