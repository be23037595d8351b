"""The built-in paper exchange `sim`: a matching engine on the service's own database.

SimAdapter (brokers/adapters/sim.py) translates between this module and brokers.types; the
`sim_quote` command, admin and `seed_demo` move prices with set_quote(). SPEC.md "The simulator".

Every write is one short transaction that locks the SimAccount row (select_for_update), then
the rows it changes: two orders of one account at the same moment are serialized, so they cannot
spend the same cash or sell the same shares (PostgreSQL; SQLite serializes writers anyway). Locks
are always taken in the order quote, account, orders, position, so no two writers deadlock.

A buy reserves its cash with one conditional UPDATE (`… SET reserved_cash = reserved_cash + needs
WHERE id = … AND cash - reserved_cash >= needs RETURNING …`) instead of SELECT … FOR UPDATE and an
UPDATE: the row lock is the UPDATE's own, and PostgreSQL re-evaluates the condition on the row's
latest version after any wait, so two buys cannot both reserve the same cash. A buy that rests
(a limit below the quote, a stop the quote has not reached; not ioc/fok) is, on PostgreSQL, one
statement in autocommit: the quote's lock, the reservation and the INSERT of the order in one
data-modifying CTE (_place_resting). When it writes nothing (no quote, marketable, funds short),
the placement takes the full path, the book in a transaction, which alone matches and words every
refusal. SQLite compares decimals as floats, so there the reservation is checked in Python under
its writer lock (BEGIN IMMEDIATE), with the quote and the account read in one statement.

Matching (decisions where SPEC.md is silent):

- Orders fill whole, never partially, at one price.
- An order meeting the quote when it arrives (placement, or the moment a stop triggers, or a
  bracket leg going live) takes the quote: a market order, a marketable limit and a triggered
  stop fill at the quote. A resting limit that a later quote crosses fills at its limit price,
  as on an exchange where the price passes through the resting order.
- A stop triggers when a quote reaches it (buy: quote >= stop; sell: quote <= stop), already at
  placement when the quote is there; it then behaves as a market order, or as a limit at
  stop_limit_price.
- ioc and fok orders that do not fill at once are canceled (status canceled, never expired).
- day orders expire at brokers.calendars.session_close() of the order's asset class
  (crypto: the end of the UTC day). Expiry is lazy: every adapter call expires the account's
  due orders first, and set_quote() does so before matching.
- Cash: an open buy reserves qty x limit (limit), qty x max(stop, quote) (stop), qty x
  stop_limit_price (stop-limit), qty x quote (market, released at once by its fill). A triggered
  stop-market buy fills at the quote, which may be above its stop: when that cost is beyond the
  buying power plus its own reservation, it is canceled instead of overspending.
- Shares: an open sell reserves its qty from the position; no shorting.
- Brackets: when the parent fills, two legs go live on the other side for its qty, with the
  parent's time in force (day or gtc; gtc for an ioc/fok parent): a take-profit limit and a
  stop-loss stop (stop-limit with stop_loss_limit). The pair reserves once (held by the
  take-profit leg): the qty for sell legs, qty x the higher leg price for buy legs (the legs of a
  sell parent; this reservation is not checked against buying power, and may take it below zero
  until a leg ends). When one leg fills, the other is canceled. The adapter reports the legs with
  their parent (BrokerOrder.legs); each can be read and canceled by its own id, and cancelling
  their filled parent cancels them both. Cancelling one leg hands the pair's reservation to the
  other, which stays open.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

from contextlib import nullcontext

from django.db import IntegrityError, connection, transaction
from django.db.models import OuterRef, Subquery, Value
from django.utils import timezone

from brokers.models import MONEY, BrokerAccount, SimAccount, SimOrder, SimPosition, SimQuote
from brokers.types import (
    OPEN_STATUSES,
    AssetClass,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from brokers.errors import BrokerRejected, DomainError, InsufficientFunds, OrderNotFound
from brokers.calendars import session_close

logger = logging.getLogger(__name__)

ZERO = Decimal("0")
PLACES = Decimal(1).scaleb(-MONEY["decimal_places"])  # 0.0000000001: what a MONEY column keeps
MAX_INTEGER_DIGITS = MONEY["max_digits"] - MONEY["decimal_places"]
_CTX = Context(prec=60, rounding=ROUND_HALF_EVEN)  # wide enough that no product or sum rounds
OPEN = [s.value for s in OPEN_STATUSES]


# --- numbers ----------------------------------------------------------------------------------

def _money(value: Decimal) -> Decimal:
    """Rounded to what a MONEY column keeps."""
    return value.quantize(PLACES, context=_CTX)


def _times(a: Decimal, b: Decimal) -> Decimal:
    return _money(_CTX.multiply(a, b))


def _fmt(value: Decimal) -> str:
    """0.1 -> "0.10", 0.001 -> "0.001", 100000 -> "100000.00": for details, no exponent."""
    text = f"{value.normalize():f}"
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def checked_amount(name: str, value, *, error=BrokerRejected) -> Decimal:
    """A positive, finite Decimal that a MONEY column holds exactly."""
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise error(f"{name} must be a number, got {value!r}") from None
    if not number.is_finite() or number <= 0:
        raise error(f"{name} must be a positive number, got {value}")
    if number.as_tuple().exponent < -MONEY["decimal_places"]:
        raise error(f"{name} has more than {MONEY['decimal_places']} decimal places: {value}")
    if number.adjusted() >= MAX_INTEGER_DIGITS:
        raise error(f"{name} is too large: {value}")
    return number


# --- quotes -----------------------------------------------------------------------------------

def get_quote(asset_class: str, symbol: str) -> Decimal | None:
    return SimQuote.objects.filter(asset_class=asset_class, symbol=symbol).values_list("price", flat=True).first()


def set_quote(asset_class: str, symbol: str, price) -> int:
    """Set the quote of a symbol, then expire and match the resting orders of every account.

    Returns how many orders changed (filled, triggered, canceled by their other leg, expired).
    Bad input raises ValueError.
    """
    asset_class = AssetClass(asset_class)  # ValueError for an unknown asset class
    if not symbol or len(symbol) > SimQuote._meta.get_field("symbol").max_length:
        raise ValueError(f"symbol must be 1 to 32 characters, got {symbol!r}")
    price = checked_amount("price", price, error=ValueError)
    SimQuote.objects.update_or_create(asset_class=asset_class, symbol=symbol, defaults={"price": price})
    account_ids = sorted(set(
        SimOrder.objects.filter(account__connection__asset_class=asset_class, symbol=symbol, status__in=OPEN)
        .values_list("account_id", flat=True)))
    changed = 0
    for account_id in account_ids:
        with transaction.atomic():
            book = _Book.lock(account_id)
            changed += book.expire_due()
            changed += book.match_symbol(symbol)
    logger.info("sim quote set", extra={"asset_class": str(asset_class), "symbol": symbol, "price": str(price),
                                        "orders_changed": changed})
    return changed


# --- accounts ---------------------------------------------------------------------------------

def open_account(*, connection_id: int, currency: str, starting_cash: Decimal) -> SimAccount:
    """The simulator account of a connection, created with its starting cash on first use."""
    account = SimAccount.objects.filter(connection_id=connection_id).first()
    if account is not None:
        return account
    account, _ = SimAccount.objects.get_or_create(
        connection_id=connection_id,
        defaults={"currency": currency, "cash": starting_cash, "last_equity": starting_cash,
                  "last_equity_date": timezone.now().date()})
    return account


@dataclass(frozen=True)
class Holding:
    position: SimPosition
    price: Decimal  # the quote; the average entry price when the quote was deleted

    @property
    def market_value(self) -> Decimal:
        return _times(self.position.qty, self.price)

    @property
    def unrealized_pnl(self) -> Decimal:
        return _times(self.position.qty, self.price - self.position.avg_entry_price)

    @property
    def unrealized_pnl_pct(self) -> Decimal:
        """A fraction: quote / average entry - 1."""
        return _money(_CTX.subtract(_CTX.divide(self.price, self.position.avg_entry_price), Decimal(1)))


def holdings(*, account: SimAccount | None = None, account_id: int | None = None,
             asset_class: str | None = None) -> list[Holding]:
    """The account's positions at the quotes, in one query (the quote joined in by a subquery); pass
    asset_class when it is known (the adapter knows it), else one more query looks it up."""
    account_id = account.pk if account is not None else account_id
    if asset_class is None:
        asset_class = _asset_class_of(account) if account is not None else _asset_class_of_id(account_id)
    quote = SimQuote.objects.filter(asset_class=asset_class, symbol=OuterRef("symbol")).values("price")[:1]
    positions = SimPosition.objects.filter(account_id=account_id).annotate(quote=Subquery(quote)).order_by("symbol")
    return [Holding(position=p, price=p.quote if p.quote is not None else p.avg_entry_price) for p in positions]


def equity_of(*, account: SimAccount, asset_class: str | None = None) -> Decimal:
    """cash + sum of qty x quote."""
    return equity_from(account.cash, holdings(account=account, asset_class=asset_class))


def equity_from(cash: Decimal, held: list[Holding]) -> Decimal:
    """cash + sum of qty x quote, of holdings already read (each market value rounded as a MONEY column)."""
    total = cash
    for holding in held:
        total = _CTX.add(total, holding.market_value)
    return _money(total)


def roll_day(*, account_id: int | None = None, account: SimAccount | None = None,
             asset_class: str | None = None) -> SimAccount:
    """The account, with last_equity moved to today's equity on the first read of a new UTC day.

    Given a row just read (`account`), it is not read again unless the day rolls over.
    """
    today = timezone.now().date()
    if account is None:
        account = SimAccount.objects.get(pk=account_id)
    if account.last_equity_date >= today:
        return account
    with transaction.atomic():
        account = SimAccount.objects.select_for_update().get(pk=account.pk)
        if account.last_equity_date < today:
            account.last_equity = equity_of(account=account, asset_class=asset_class)
            account.last_equity_date = today
            account.save(update_fields=["last_equity", "last_equity_date"])
    return account


def account_with_next_expiry(**lookup) -> SimAccount | None:
    """The SimAccount matching lookup (pk= or connection_id=), read now, in one query, annotated with
    `next_expiry`: the earliest expires_at of its open orders (None: no open order ever expires).

    The open-expiry partial index makes the annotation one index probe, however many orders rest.
    """
    first_expiry = (SimOrder.objects.filter(account=OuterRef("pk"), status__in=OPEN, expires_at__isnull=False)
                    .order_by("expires_at").values("expires_at")[:1])
    return SimAccount.objects.filter(**lookup).annotate(next_expiry=Subquery(first_expiry)).first()


def account_snapshot(*, asset_class: str, **lookup) -> tuple[SimAccount, list[Holding]] | None:
    """The SimAccount matching lookup (pk= or connection_id=) annotated with `next_expiry` (as
    account_with_next_expiry), and its holdings (as holdings()), in one statement; None: no account.

    One raw SELECT: the account LEFT JOIN its positions, the next open expiry and each position's
    quote by subqueries (the open-expiry index makes the first one probe). Values are decoded by the
    fields' own converters, so they are what the ORM reads.
    """
    (column, value), = lookup.items()
    sql = _snapshot_sql("id" if column == "pk" else SimAccount._meta.get_field(column).column)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*OPEN, str(asset_class), value])
        rows = cursor.fetchall()
    if not rows:
        return None
    decode = _decoders(_SNAPSHOT_EXPRESSIONS)
    n_account, n_position = len(_ACCOUNT_FIELDS), len(_POSITION_FIELDS)
    first = _decoded(decode, rows[0])
    account = SimAccount.from_db(connection.alias, None, first[:n_account])
    account.next_expiry = first[n_account]
    held = []
    for row in rows:
        values = _decoded(decode, row) if row is not rows[0] else first
        position_values = values[n_account + 1:n_account + 1 + n_position]
        if position_values[0] is None:  # the LEFT JOIN's row of an account without positions
            continue
        quote = values[-1]
        position = SimPosition.from_db(connection.alias, None, position_values)
        held.append(Holding(position=position, price=quote if quote is not None else position.avg_entry_price))
    return account, held


# --- orders -----------------------------------------------------------------------------------

def expire_due(*, account_id: int) -> int:
    """Expire the account's open orders whose time is up; how many."""
    due = SimOrder.objects.filter(account_id=account_id, status__in=OPEN, expires_at__lte=timezone.now())
    if not due.exists():
        return 0
    with transaction.atomic():
        return _Book.lock(account_id).expire_due()


def place_order(*, account_id: int, request: OrderRequest, asset_class: str | None = None) -> SimOrder:
    """Place an order; it is matched against the quote before this returns.

    A repeated broker_client_id returns the existing order. Raises BrokerRejected (no quote, a
    malformed order) or InsufficientFunds (buying power, no shorting). `asset_class` is the
    account's, when the caller knows it (saves a query).
    """
    _check_request(request)
    account_class = AssetClass(asset_class) if asset_class is not None else _asset_class_of_id(account_id)
    if request.asset_class != account_class:
        raise BrokerRejected(f"this simulator account trades {account_class}, not {request.asset_class}")
    order = _new_order(account_id, request, account_class, timezone.now())
    try:
        if _place_resting(order, account_class):
            logger.info("sim order placed", extra={"broker_order_id": order.broker_order_id, "status": order.status})
            return order
        with transaction.atomic():
            price, book = _Book.for_placement(order, asset_class=account_class)
            return book.place(order, price)
    except (IntegrityError, DomainError):
        # A repeated broker_client_id is rare, so it is not looked for before every placement (one
        # query each): unique_sim_client_id refuses the second INSERT, even from a placement
        # committed while this one waited for the account's lock. Any refusal asks too, since an
        # order already placed under this id is returned whatever its repeat would run into now.
        existing = SimOrder.objects.filter(account_id=account_id, parent__isnull=True,
                                           broker_client_id=request.broker_client_id).first()
        if existing is None:
            raise
        return existing


def _new_order(account_id: int, request: OrderRequest, asset_class: AssetClass, now) -> SimOrder:
    """The SimOrder a placement inserts (both paths), before its reservation."""
    bracket = request.bracket
    order = SimOrder(
        account_id=account_id, broker_order_id=f"sim-{uuid.uuid4().hex}", broker_client_id=request.broker_client_id,
        symbol=request.symbol, side=request.side, order_type=request.order_type,
        time_in_force=request.time_in_force, qty=request.qty,
        limit_price=request.limit_price if request.order_type == OrderType.LIMIT else None,
        stop_price=request.stop_price if request.order_type == OrderType.STOP else None,
        stop_limit_price=request.stop_limit_price if request.order_type == OrderType.STOP else None,
        take_profit=bracket.take_profit if bracket else None, stop_loss=bracket.stop_loss if bracket else None,
        stop_loss_limit=bracket.stop_loss_limit if bracket else None,
        status=OrderStatus.ACCEPTED, submitted_at=now, updated_at=now)
    if order.order_type != OrderType.MARKET and order.time_in_force == TimeInForce.DAY:
        order.expires_at = session_close(asset_class, now)
    return order


def _place_resting(order: SimOrder, asset_class: AssetClass) -> bool:
    """PostgreSQL: insert a buy that rests at the quote, with its reservation, in one statement; False
    when it wrote nothing (another database, an order this path does not take, no quote, the quote
    marketable or past the stop, funds short), and the full path is to decide.

    The statement (_resting_sql) locks the quote FOR SHARE first (the UPDATE's condition on it is an
    InitPlan, evaluated before the UPDATE locks its row), then reserves by a conditional UPDATE of
    the account, then inserts the order from the UPDATE's row: the module's lock order, in autocommit a transaction of its own, so a unique violation
    (a repeated broker_client_id) rolls the reservation back with it. Inside a caller's transaction
    a savepoint keeps that transaction usable for the lookup that follows the IntegrityError.
    """
    if (connection.vendor != "postgresql" or order.side != Side.BUY
            or order.time_in_force in (TimeInForce.IOC, TimeInForce.FOK)):
        return False
    if order.order_type == OrderType.LIMIT:
        rests_when, threshold, basis = ">", order.limit_price, order.limit_price  # a buy limit at or above the quote fills
    elif order.order_type == OrderType.STOP:
        # Not triggered: quote < stop, so max(stop, quote) of _buy_price_basis is the stop.
        rests_when, threshold = "<", order.stop_price
        basis = order.stop_limit_price if order.stop_limit_price is not None else order.stop_price
    else:
        return False
    needs = _times(order.qty, basis)
    order.reserved_cash = needs
    reserved_field, price_field = SimAccount._meta.get_field("reserved_cash"), SimQuote._meta.get_field("price")
    params = [
        SimQuote._meta.get_field("asset_class").get_db_prep_save(str(asset_class), connection),
        SimQuote._meta.get_field("symbol").get_db_prep_save(order.symbol, connection),
        reserved_field.get_db_prep_save(needs, connection), order.account_id,
        reserved_field.get_db_prep_save(needs, connection), price_field.get_db_prep_save(threshold, connection),
        *(field.get_db_prep_save(getattr(order, field.attname), connection) for field in _ORDER_INSERT_FIELDS)]
    try:
        with nullcontext() if transaction.get_autocommit() else transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_resting_sql(rests_when), params)
            row = cursor.fetchone()
    except BaseException:
        order.reserved_cash = ZERO
        raise
    if row is None:
        order.reserved_cash = ZERO
        return False
    order.pk = row[0]
    order._state.adding, order._state.db = False, connection.alias
    return True


def _price_locked_for_placement(asset_class: str, symbol: str) -> Decimal | None:
    """The quote's price, its row locked until the end of the transaction against set_quote (which
    takes FOR UPDATE) but not against other placements (FOR SHARE). Other databases: FOR UPDATE
    where they have it (SQLite: _Book.for_placement reads it with the account instead)."""
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(SimQuote._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT price FROM {table} WHERE asset_class = %s AND symbol = %s FOR SHARE",
                           [str(asset_class), symbol])
            row = cursor.fetchone()
        return row[0] if row else None
    return (SimQuote.objects.select_for_update().filter(asset_class=asset_class, symbol=symbol)
            .values_list("price", flat=True).first())


def cancel_order(*, account_id: int, broker_order_id: str) -> SimOrder:
    """Cancel an open order or bracket leg (OrderNotFound / BrokerRejected "order is already filled").

    A filled bracket parent whose legs are still open: the legs are canceled. One leg of a pair:
    only that leg; the other keeps the pair's reservation (see the module docstring).
    """
    with transaction.atomic():
        book = _Book.lock(account_id)
        order = (SimOrder.objects.select_for_update()
                 .filter(account=book.account, broker_order_id=broker_order_id).first())
        if order is None:
            raise OrderNotFound(f"no simulator order {broker_order_id}")
        if order.status in OPEN and order.parent_id is not None:
            book.close_leg(order)
            return order
        if order.status in OPEN:
            book.close(order, OrderStatus.CANCELED)
            return order
        legs = list(SimOrder.objects.select_for_update().filter(parent=order, status__in=OPEN).order_by("id"))
        if order.status == OrderStatus.FILLED and legs:
            for leg in legs:
                book.close(leg, OrderStatus.CANCELED)
            return order
        raise BrokerRejected(f"order is already {order.status}")


def _check_request(request: OrderRequest) -> None:
    if not 1 <= len(request.symbol or "") <= SimOrder._meta.get_field("symbol").max_length:
        raise BrokerRejected(f"symbol must be 1 to 32 characters, got {request.symbol!r}")
    if not 1 <= len(request.broker_client_id or "") <= SimOrder._meta.get_field("broker_client_id").max_length:
        raise BrokerRejected("broker_client_id must be 1 to 64 characters")
    checked_amount("qty", request.qty)
    if request.order_type == OrderType.LIMIT:
        if request.limit_price is None:
            raise BrokerRejected("a limit order needs limit_price")
        checked_amount("limit_price", request.limit_price)
    elif request.order_type == OrderType.STOP:
        if request.stop_price is None:
            raise BrokerRejected("a stop order needs stop_price")
        checked_amount("stop_price", request.stop_price)
        if request.stop_limit_price is not None:
            checked_amount("stop_limit_price", request.stop_limit_price)
    elif request.order_type != OrderType.MARKET:
        raise BrokerRejected(f"order_type {request.order_type} is not a broker-layer type "
                             f"(a stop-limit is order_type stop with stop_limit_price)")
    bracket = request.bracket
    if bracket is not None:
        take, stop = checked_amount("take_profit", bracket.take_profit), checked_amount("stop_loss", bracket.stop_loss)
        if bracket.stop_loss_limit is not None:
            checked_amount("stop_loss_limit", bracket.stop_loss_limit)
        if (request.side == Side.BUY and take <= stop) or (request.side == Side.SELL and take >= stop):
            raise BrokerRejected(f"bracket of a {request.side}: take_profit {take} must be on the other side "
                                 f"of stop_loss {stop}")


def _asset_class_of(account: SimAccount) -> AssetClass:
    return AssetClass(BrokerAccount.objects.values_list("asset_class", flat=True).get(pk=account.connection_id))


def _asset_class_of_id(account_id: int) -> AssetClass:
    return AssetClass(BrokerAccount.objects.values_list("asset_class", flat=True).get(sim_account__pk=account_id))


def _crossed(side: str, stop: Decimal, price: Decimal) -> bool:
    return price >= stop if side == Side.BUY else price <= stop


def _marketable(side: str, limit: Decimal, price: Decimal) -> bool:
    return price <= limit if side == Side.BUY else price >= limit


def _opposite(side: str) -> Side:
    return Side.SELL if side == Side.BUY else Side.BUY


class _Book:
    """One account's book inside one transaction, its SimAccount row locked."""

    def __init__(self, account: SimAccount, asset_class: str | None = None, now=None):
        self.account = account
        self.now = now if now is not None else timezone.now()
        self._asset_class: AssetClass | None = AssetClass(asset_class) if asset_class is not None else None

    @classmethod
    def lock(cls, account_id: int, asset_class: str | None = None, now=None) -> _Book:
        return cls(SimAccount.objects.select_for_update().get(pk=account_id), asset_class, now)

    @classmethod
    def for_placement(cls, order: SimOrder, *, asset_class: AssetClass) -> tuple[Decimal, _Book]:
        """The quote's price, locked against set_quote, and the book of the order's account with the
        order's reservation made (a buy's cash written to the account, a sell's shares to its
        position); or the refusal raised (no quote, funds, no shorting).

        The quote row first, then the account (set_quote locks in the same order): a placement and
        a new quote of its symbol are serialized, so the new quote never misses the new order.
        Placements share the quote's lock among themselves (FOR SHARE): they only read it, and every
        account's placements of one symbol must not queue behind each other. A buy on PostgreSQL
        locks its account by the reservation's conditional UPDATE; when that matches no row, the
        account is locked and read, and the refusal worded from it (or, if a release came in
        between, the reservation made on the locked row).
        """
        now = order.submitted_at
        if connection.vendor == "sqlite":
            # No row locks: the IMMEDIATE transaction already holds the database's writer lock, so
            # the quote and the account are one read, and the reservation is checked in Python
            # (SQLite would compare the decimals as floats).
            price, account = _price_and_account(asset_class, order.symbol, order.account_id)
            book = cls(account, asset_class, now)
        else:
            price, book = _price_locked_for_placement(asset_class, order.symbol), None
        if price is None:
            raise BrokerRejected(f"no simulator quote for {order.symbol}; set one with manage.py sim_quote")
        if book is None and order.side == Side.BUY and connection.vendor == "postgresql":
            needs = _times(order.qty, cls._buy_price_basis(order, price))
            account = _reserve_cash(order.account_id, needs)
            if account is not None:
                order.reserved_cash, order.account = needs, account
                return price, cls(account, asset_class, now)
        if book is None:
            book = cls.lock(order.account_id, asset_class, now)
        order.account = book.account
        book._reserve_for_placement(order, price)
        return price, book

    @property
    def asset_class(self) -> AssetClass:
        if self._asset_class is None:
            self._asset_class = _asset_class_of(self.account)
        return self._asset_class

    # placement

    def place(self, order: SimOrder, price: Decimal) -> SimOrder:
        """Insert a new order (_new_order) whose reservation for_placement made, then match it."""
        order.save(force_insert=True)
        # The new row is this transaction's own (no other can see it, let alone lock it): match this
        # very instance, which then holds every change the match makes.
        self.match(order.pk, price, arriving=True, order=order)
        if order.status in OPEN and order.time_in_force in (TimeInForce.IOC, TimeInForce.FOK):
            self.close(order, OrderStatus.CANCELED)
        logger.info("sim order placed", extra={"broker_order_id": order.broker_order_id, "status": order.status})
        return order

    def _reserve_for_placement(self, order: SimOrder, price: Decimal) -> None:
        if order.side == Side.BUY:
            needs = _times(order.qty, self._buy_price_basis(order, price))
            if needs > self.account.buying_power:
                raise InsufficientFunds(f"funds: buying power {_fmt(self.account.buying_power)} "
                                        f"{self.account.currency}, order needs {_fmt(needs)}")
            order.reserved_cash = needs
            self.account.reserved_cash += needs
            self.account.save(update_fields=["reserved_cash"])
            return
        position = self._position(order.symbol)
        held = position.qty if position else ZERO
        reserved = position.reserved_qty if position else ZERO
        if order.qty > held - reserved:
            detail = f"funds: no shorting: holds {_fmt(held)}, sell {_fmt(order.qty)}"
            if reserved:
                detail += f" ({_fmt(reserved)} already held by open sell orders)"
            raise InsufficientFunds(detail)
        order.reserved_qty = order.qty
        position.reserved_qty += order.qty
        position.save(update_fields=["reserved_qty"])

    @staticmethod
    def _buy_price_basis(order: SimOrder, price: Decimal) -> Decimal:
        if order.order_type == OrderType.LIMIT:
            return order.limit_price
        if order.order_type == OrderType.STOP:
            return order.stop_limit_price if order.stop_limit_price is not None else max(order.stop_price, price)
        return price

    # matching

    def match_symbol(self, symbol: str) -> int:
        """Match the account's resting orders of a symbol against its quote, oldest first."""
        price = get_quote(self.asset_class, symbol)
        ids = list(SimOrder.objects.select_for_update()
                   .filter(account=self.account, symbol=symbol, status__in=OPEN)
                   .order_by("submitted_at", "id").values_list("id", flat=True))
        changed: set[int] = set()
        for order_id in ids:
            changed |= self.match(order_id, price, arriving=False)
        return len(changed)

    def match(self, order_id: int, price: Decimal, *, arriving: bool, order: SimOrder | None = None) -> set[int]:
        """Match one order, and the bracket legs its fill opens; the ids of the orders that changed.

        `order`: the order's instance, when the caller holds it locked and current (a placement).
        """
        changed: set[int] = set()
        todo = [(order_id, arriving)]
        given = order
        while todo:
            next_id, next_arriving = todo.pop(0)
            if given is not None and next_id == given.pk:
                order, given = given, None
            else:
                order = SimOrder.objects.select_for_update().get(pk=next_id)
            if order.status in OPEN:
                legs = self._match_one(order, price, next_arriving, changed)
                todo.extend((leg_id, True) for leg_id in legs)
        return changed

    def _match_one(self, order: SimOrder, price: Decimal, arriving: bool, changed: set[int]) -> list[int]:
        if order.order_type == OrderType.STOP and not order.triggered:
            if not _crossed(order.side, order.stop_price, price):
                return []
            order.triggered, order.updated_at = True, self.now
            order.save(update_fields=["triggered", "updated_at"])
            changed.add(order.pk)
            arriving = True  # from here on it behaves as a newly arrived market or limit order
        limit = order.limit_price if order.order_type == OrderType.LIMIT else order.stop_limit_price
        if limit is None:
            return self._fill(order, price, changed)
        if _marketable(order.side, limit, price):
            return self._fill(order, price if arriving else limit, changed)
        return []

    def _fill(self, order: SimOrder, price: Decimal, changed: set[int]) -> list[int]:
        """Fill the whole order at price; the ids of the bracket legs that this opens."""
        siblings = []
        if order.parent_id is not None:
            siblings = list(SimOrder.objects.select_for_update()
                            .filter(parent_id=order.parent_id, status__in=OPEN).exclude(pk=order.pk).order_by("id"))
        if order.side == Side.BUY:
            cost = _times(order.qty, price)
            can_spend = self.account.buying_power + order.reserved_cash + sum(s.reserved_cash for s in siblings)
            if cost > can_spend:  # a stop-market buy triggered above its stop
                logger.warning("sim stop buy canceled: cost beyond buying power",
                               extra={"broker_order_id": order.broker_order_id, "cost": str(cost)})
                self.close(order, OrderStatus.CANCELED)
                changed.add(order.pk)
                return []
        for sibling in siblings:  # one cancels other
            self.close(sibling, OrderStatus.CANCELED)
            changed.add(sibling.pk)
        self._release(order)
        position = self._position(order.symbol)
        if order.side == Side.BUY:
            self.account.cash -= cost
            if position is None:
                SimPosition.objects.create(account=self.account, symbol=order.symbol, qty=order.qty,
                                           avg_entry_price=price)
            else:
                total = position.qty + order.qty
                position.avg_entry_price = _money(_CTX.divide(
                    _CTX.add(_CTX.multiply(position.qty, position.avg_entry_price), _CTX.multiply(order.qty, price)),
                    total))
                position.qty = total
                position.save(update_fields=["qty", "avg_entry_price"])
        else:
            # The order's reservation guarantees position.qty >= order.qty.
            self.account.cash += _times(order.qty, price)
            position.qty -= order.qty
            if position.qty == 0 and position.reserved_qty == 0:
                position.delete()
            else:
                position.save(update_fields=["qty"])
        self.account.save(update_fields=["cash", "reserved_cash"])
        order.status, order.filled_qty, order.avg_fill_price, order.updated_at = (
            OrderStatus.FILLED, order.qty, price, self.now)
        order.save()
        changed.add(order.pk)
        logger.info("sim order filled", extra={"broker_order_id": order.broker_order_id, "price": str(price)})
        return self._open_legs(order) if order.take_profit is not None else []

    def _open_legs(self, parent: SimOrder) -> list[int]:
        side = _opposite(parent.side)
        tif = parent.time_in_force if parent.time_in_force in (TimeInForce.DAY, TimeInForce.GTC) else TimeInForce.GTC
        expires_at = session_close(self.asset_class, self.now) if tif == TimeInForce.DAY else None
        common = dict(account=self.account, parent=parent, symbol=parent.symbol, side=side, qty=parent.qty,
                      time_in_force=tif, status=OrderStatus.ACCEPTED, expires_at=expires_at,
                      submitted_at=self.now, updated_at=self.now)
        take = SimOrder(broker_order_id=f"sim-{uuid.uuid4().hex}", order_type=OrderType.LIMIT,
                        limit_price=parent.take_profit, **common)
        stop = SimOrder(broker_order_id=f"sim-{uuid.uuid4().hex}", order_type=OrderType.STOP,
                        stop_price=parent.stop_loss, stop_limit_price=parent.stop_loss_limit, **common)
        # The pair reserves once, on the take-profit leg: only one of them can fill.
        if side == Side.SELL:
            take.reserved_qty = parent.qty
            position = self._position(parent.symbol)
            position.reserved_qty += parent.qty
            position.save(update_fields=["reserved_qty"])
        else:
            highest = max(parent.take_profit, parent.stop_loss_limit or parent.stop_loss)
            take.reserved_cash = _times(parent.qty, highest)
            self.account.reserved_cash += take.reserved_cash
            self.account.save(update_fields=["reserved_cash"])
        take.save()
        stop.save()
        return [take.pk, stop.pk]

    # endings

    def expire_due(self) -> int:
        due = list(SimOrder.objects.select_for_update()
                   .filter(account=self.account, status__in=OPEN, expires_at__lte=self.now).order_by("id"))
        for order in due:
            self.close(order, OrderStatus.EXPIRED)
        return len(due)

    def close(self, order: SimOrder, status: OrderStatus) -> None:
        """End an open order without a fill (canceled or expired), releasing what it reserved."""
        self._release(order)
        self.account.save(update_fields=["reserved_cash"])
        order.status, order.updated_at = status, self.now
        order.save(update_fields=["status", "updated_at", "reserved_cash", "reserved_qty"])
        logger.info("sim order closed", extra={"broker_order_id": order.broker_order_id, "status": str(status)})

    def close_leg(self, leg: SimOrder) -> None:
        """Cancel one open bracket leg. The pair reserves once (on the take-profit leg): an open
        sibling takes that reservation over, so it can still fill (a sell leg's shares stay held)."""
        sibling = (SimOrder.objects.select_for_update()
                   .filter(parent_id=leg.parent_id, status__in=OPEN).exclude(pk=leg.pk).first())
        if sibling is not None and (leg.reserved_cash or leg.reserved_qty):
            sibling.reserved_cash += leg.reserved_cash
            sibling.reserved_qty += leg.reserved_qty
            leg.reserved_cash = leg.reserved_qty = ZERO
            sibling.save(update_fields=["reserved_cash", "reserved_qty"])
        self.close(leg, OrderStatus.CANCELED)

    def _release(self, order: SimOrder) -> None:
        if order.reserved_cash:
            self.account.reserved_cash -= order.reserved_cash
            order.reserved_cash = ZERO
        if order.reserved_qty:
            position = self._position(order.symbol)
            position.reserved_qty -= order.reserved_qty
            position.save(update_fields=["reserved_qty"])
            order.reserved_qty = ZERO

    def _position(self, symbol: str) -> SimPosition | None:
        return SimPosition.objects.select_for_update().filter(account=self.account, symbol=symbol).first()


# --- the hot path's raw statements ---------------------------------------------------------------
#
# A placement and an account read are each one or two statements here (bench/README.md: an ORM
# statement costs ~0.4 ms of CPU, a raw one ~0.05 ms). Table and column names come from the models'
# _meta, values go through field.get_db_prep_save and come back through the fields' own converters,
# so these statements read and write what the ORM would (tests/brokers/test_sim_raw_sql.py pins it).

_ACCOUNT_FIELDS = tuple(SimAccount._meta.concrete_fields)
_POSITION_FIELDS = tuple(SimPosition._meta.concrete_fields)
_ORDER_INSERT_FIELDS = tuple(f for f in SimOrder._meta.concrete_fields if not f.primary_key)
# What a snapshot row holds, as the expressions the ORM would have read it with: the account's
# columns, its next open expiry (a Subquery annotation in account_with_next_expiry), the position's
# columns, and its quote (a Subquery annotation in holdings()).
_SNAPSHOT_EXPRESSIONS = (
    *(f.cached_col for f in _ACCOUNT_FIELDS),
    Value(None, output_field=SimOrder._meta.get_field("expires_at")),
    *(f.cached_col for f in _POSITION_FIELDS),
    Value(None, output_field=SimQuote._meta.get_field("price")),
)
_ACCOUNT_EXPRESSIONS = tuple(f.cached_col for f in _ACCOUNT_FIELDS)
_PRICE_AND_ACCOUNT_EXPRESSIONS = (SimQuote._meta.get_field("price").cached_col, *_ACCOUNT_EXPRESSIONS)
_SQL: dict[tuple, str] = {}
_DECODERS: dict[tuple, list] = {}


def _qn(name: str) -> str:
    return connection.ops.quote_name(name)


def _c(model, name: str, alias: str | None = None) -> str:
    column = _qn(model._meta.get_field(name).column)
    return f"{alias}.{column}" if alias else column


def _t(model) -> str:
    return _qn(model._meta.db_table)


def _decoders(expressions: tuple) -> list:
    """Per column, the converters the ORM's compiler would apply to it (backend's, then field's);
    `expressions` is one of the module's constant tuples (the cache is keyed by its identity)."""
    key = (connection.alias, connection.vendor, id(expressions))
    found = _DECODERS.get(key)
    if found is None:
        found = [(i, e, [*connection.ops.get_db_converters(e), *e.get_db_converters(connection)])
                 for i, e in enumerate(expressions)]
        found = _DECODERS[key] = [(i, e, convs) for i, e, convs in found if convs]
    return found


def _decoded(decoders: list, row: tuple) -> list:
    values = list(row)
    for i, expression, converters in decoders:
        for convert in converters:
            values[i] = convert(values[i], expression, connection)
    return values


def _snapshot_sql(lookup_column: str) -> str:
    key = ("snapshot", connection.vendor, lookup_column)
    if key not in _SQL:
        a, p = "a", "p"
        account_columns = ", ".join(f"{a}.{_qn(f.column)}" for f in _ACCOUNT_FIELDS)
        position_columns = ", ".join(f"{p}.{_qn(f.column)}" for f in _POSITION_FIELDS)
        expires = _c(SimOrder, "expires_at", "o")
        next_expiry = (f"(SELECT {expires} FROM {_t(SimOrder)} o WHERE {_c(SimOrder, 'account', 'o')} = {a}.{_qn('id')}"
                       f" AND {_c(SimOrder, 'status', 'o')} IN ({', '.join(['%s'] * len(OPEN))})"
                       f" AND {expires} IS NOT NULL ORDER BY {expires} ASC LIMIT 1)")
        quote = (f"(SELECT {_c(SimQuote, 'price', 'q')} FROM {_t(SimQuote)} q WHERE {_c(SimQuote, 'asset_class', 'q')} = %s"
                 f" AND {_c(SimQuote, 'symbol', 'q')} = {_c(SimPosition, 'symbol', p)} LIMIT 1)")
        _SQL[key] = (
            f"SELECT {account_columns}, {next_expiry}, {position_columns}, {quote}"
            f" FROM {_t(SimAccount)} {a} LEFT JOIN {_t(SimPosition)} {p}"
            f" ON {_c(SimPosition, 'account', p)} = {a}.{_qn('id')}"
            f" WHERE {a}.{_qn(lookup_column)} = %s ORDER BY {_c(SimPosition, 'symbol', p)} ASC")
    return _SQL[key]


def _resting_sql(rests_when: str) -> str:
    """The resting buy's one statement (PostgreSQL), see _place_resting. Parameters: the quote's
    asset class and symbol, the reservation, the account id, the reservation again, the price the
    quote must be `rests_when` (> or <) for the order to rest, then the order's _ORDER_INSERT_FIELDS."""
    key = ("resting", connection.vendor, rests_when)
    if key not in _SQL:
        price, reserved, cash, pk = (_c(SimQuote, "price"), _c(SimAccount, "reserved_cash"), _c(SimAccount, "cash"),
                                     _qn("id"))
        columns = ", ".join(_qn(f.column) for f in _ORDER_INSERT_FIELDS)
        # Typed, so that the INSERT … SELECT needs no inference from the target (a NULL parameter under
        # server-side binding); text without a length, so that too long a value fails as an INSERT would
        # instead of being cut to the column's length by the cast.
        values = ", ".join(f"CAST(%s AS {_cast_type(f)})" for f in _ORDER_INSERT_FIELDS)
        _SQL[key] = (
            f"WITH quote AS (SELECT {price} FROM {_t(SimQuote)} WHERE {_c(SimQuote, 'asset_class')} = %s"
            f" AND {_c(SimQuote, 'symbol')} = %s FOR SHARE),"
            f" reserved AS (UPDATE {_t(SimAccount)} SET {reserved} = {reserved} + %s"
            f" WHERE {pk} = %s AND {cash} - {reserved} >= %s"
            f" AND EXISTS (SELECT 1 FROM quote WHERE {price} {rests_when} %s) RETURNING {pk}),"
            f" placed AS (INSERT INTO {_t(SimOrder)} ({columns}) SELECT {values} FROM reserved RETURNING {pk})"
            f" SELECT {pk} FROM placed")
    return _SQL[key]


def _cast_type(field) -> str:
    if field.get_internal_type() == "CharField":
        return connection.ops.cast_char_field_without_max_length
    return field.cast_db_type(connection)


def _reserve_cash(account_id: int, needs: Decimal) -> SimAccount | None:
    """PostgreSQL: add needs to the account's reserved cash if its buying power covers it, in one
    conditional UPDATE that takes the row's lock for the rest of the transaction; the account as
    updated, or None (funds short)."""
    key = ("reserve", connection.vendor)
    if key not in _SQL:
        reserved, cash = _c(SimAccount, "reserved_cash"), _c(SimAccount, "cash")
        _SQL[key] = (f"UPDATE {_t(SimAccount)} SET {reserved} = {reserved} + %s WHERE {_qn('id')} = %s"
                     f" AND {cash} - {reserved} >= %s RETURNING {', '.join(_qn(f.column) for f in _ACCOUNT_FIELDS)}")
    amount = SimAccount._meta.get_field("reserved_cash").get_db_prep_save(needs, connection)
    with connection.cursor() as cursor:
        cursor.execute(_SQL[key], [amount, account_id, amount])
        row = cursor.fetchone()
    if row is None:
        return None
    return SimAccount.from_db(connection.alias, None, _decoded(_decoders(_ACCOUNT_EXPRESSIONS), row))


def _price_and_account(asset_class: str, symbol: str, account_id: int) -> tuple[Decimal | None, SimAccount]:
    """SQLite, inside the placement's IMMEDIATE transaction: the quote's price and the account, one read."""
    key = ("price_and_account", connection.vendor)
    if key not in _SQL:
        quote = (f"(SELECT {_c(SimQuote, 'price', 'q')} FROM {_t(SimQuote)} q WHERE {_c(SimQuote, 'asset_class', 'q')} = %s"
                 f" AND {_c(SimQuote, 'symbol', 'q')} = %s)")
        _SQL[key] = (f"SELECT {quote}, {', '.join('a.' + _qn(f.column) for f in _ACCOUNT_FIELDS)}"
                     f" FROM {_t(SimAccount)} a WHERE a.{_qn('id')} = %s")
    with connection.cursor() as cursor:
        cursor.execute(_SQL[key], [str(asset_class), symbol, account_id])
        row = cursor.fetchone()
    if row is None:
        raise SimAccount.DoesNotExist(f"no simulator account {account_id}")
    price, *values = _decoded(_decoders(_PRICE_AND_ACCOUNT_EXPRESSIONS), row)
    return price, SimAccount.from_db(connection.alias, None, values)
