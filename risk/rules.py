"""RiskManager v2 rules (SPEC.md "RiskManager v2", "Edge cases, decided").

One small class per rule, each with a `name` and `evaluate(ctx) -> RuleResult`. A rule never
raises a denial: it returns it in RuleResult.error (with `risk_rule` set to its name), so a
what-if can show every rule's numbers; the manager raises the first one. Errors that are not
denials (the broker failing, the calendar out of range) propagate unchanged.

Rules judge snapshots (account, positions, latest price) that RiskContext fetches from the
adapter lazily, at most once per evaluation. Imports: the brokers app (types, errors, conf, calendars) only (STYLE 19),
plus this app's own models.

Conventions of `numbers`: money and quantities are Decimal; keys ending in `_pct` are percents
rounded to 2 decimals (Decimal("9.10") means 9.10 %), while limits in settings and profiles are
fractions (0.02); times are ISO-8601 UTC strings with a Z.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from functools import cached_property
from typing import TYPE_CHECKING

from brokers.conf import conf

from brokers.types import Account, OrderRequest, Position, Side
from brokers import calendars
from brokers.errors import DomainError, InsufficientFunds, MarketClosed, RiskRuleViolation, TradingHalted
from risk.models import DailyBaseline, KillSwitch, KillSwitchMode

if TYPE_CHECKING:  # the interface only; risk never imports an adapter
    from brokers.base import BrokerAdapter

CENT = Decimal("0.01")
HUNDRED = Decimal(100)

# Exchanges that let an order sell more than is held (SPEC.md "Selling more than is held"): the
# order goes to the broker, which decides, and it counts as opening a position for trade_risk.
SHORTING_EXCHANGES = frozenset({"alpaca"})

# Smallest order quantity step per asset class, for trade_risk's max_qty (rounded down to it).
# An adapter may announce its own with a `qty_step` attribute.
DEFAULT_QTY_STEPS = {
    "us_equity": Decimal("1"),
    "kr_equity": Decimal("1"),
    "crypto": Decimal("0.00000001"),
}


@dataclass(frozen=True)
class RiskLimits:
    """A user's limits, as fractions of equity (0.02 = 2 %)."""

    max_trade_risk_pct: Decimal
    unprotected_loss_pct: Decimal
    daily_loss_limit_pct: Decimal

    @classmethod
    def defaults(cls) -> RiskLimits:
        return cls(max_trade_risk_pct=conf.RISK_MAX_TRADE_RISK_PCT,
                   unprotected_loss_pct=conf.RISK_UNPROTECTED_LOSS_PCT,
                   daily_loss_limit_pct=conf.RISK_DAILY_LOSS_LIMIT_PCT)


@dataclass(frozen=True)
class RuleResult:
    name: str
    ok: bool
    error: DomainError | None = field(default=None, compare=False)
    numbers: dict = field(default_factory=dict)


class RiskContext:
    """One order under evaluation, with its snapshots fetched lazily and at most once."""

    def __init__(self, *, order: OrderRequest, adapter: BrokerAdapter, exchange: str, connection_id: int,
                 now: datetime, limits: RiskLimits, user_id=None, kill_switches: Sequence[KillSwitch] | None = None):
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.user_id = user_id  # whose placement: the kill_switch rule's scope (None: global switches only)
        # The switches covering the placement at `now`, read by the caller with its other rows (a
        # placement: one statement for the connection, the profile and these); None: the rule reads them.
        self.kill_switches = None if kill_switches is None else list(kill_switches)
        self.order = order
        self.adapter = adapter
        self.exchange = str(exchange)
        self.connection_id = connection_id
        self.now = now
        self.limits = limits

    # --- snapshots (one broker call each, on first use) ---

    @cached_property
    def account(self) -> Account:
        return self.adapter.account()

    @cached_property
    def positions(self) -> list[Position]:
        return list(self.adapter.positions())

    @cached_property
    def latest_price(self) -> Decimal:
        return self.adapter.latest_price(self.order.symbol)

    # --- derived ---

    @cached_property
    def held_qty(self) -> Decimal:
        """Signed quantity held in the order's symbol (negative: short)."""
        wanted = _symbol_key(self.order.symbol)
        return sum((p.qty for p in self.positions if _symbol_key(p.symbol) == wanted), Decimal(0))

    @cached_property
    def entry(self) -> Decimal:
        """limit_price, else stop_price (stop and stop-limit orders), else the latest price."""
        if self.order.limit_price is not None:
            return self.order.limit_price
        if self.order.stop_price is not None:
            return self.order.stop_price
        return self.latest_price

    @property
    def notional(self) -> Decimal:
        return self.order.qty * self.entry

    @cached_property
    def reduces_only(self) -> bool:
        """A sell of at most the held long qty, or a buy of at most the held short qty."""
        if self.order.side == Side.BUY and not self.shorting_allowed:
            # Where shorting is refused nothing is ever held short, so a buy only opens or adds: the
            # answer is known without the positions snapshot (one broker call saved per buy).
            return False
        held = self.held_qty
        if self.order.side == Side.SELL:
            return held > 0 and self.order.qty <= held
        return held < 0 and self.order.qty <= -held

    @property
    def shorting_allowed(self) -> bool:
        return self.exchange in SHORTING_EXCHANGES

    @property
    def currency(self) -> str:
        return self.account.currency

    @property
    def qty_step(self) -> Decimal:
        step = getattr(self.adapter, "qty_step", None)
        return Decimal(str(step)) if step else DEFAULT_QTY_STEPS.get(str(self.order.asset_class), Decimal("1"))


# --- the rules, in the order the manager runs them ----------------------------------------------

class KillSwitchRule:
    """A kill switch covering the placement (the user's, for all or this asset class, or a global
    one): `halted` refuses every placement, `reducing` all but orders that only reduce a position.

    First of gate 4. `halted` needs no snapshot (no broker call); `reducing` needs the positions
    only for a sell (and a buy where shorting is allowed). Of several covering switches the
    strictest decides: halted over reducing.
    """

    name = "kill_switch"

    def evaluate(self, ctx: RiskContext) -> RuleResult:
        switches = ctx.kill_switches
        if switches is None:  # not read with the placement's other rows: read them here
            # In id order, as equity.gates.read_for_placement reads them, so that of two equally strict
            # switches both pick the same one.
            switches = list(KillSwitch.objects.covering(user_id=ctx.user_id, asset_class=str(ctx.order.asset_class),
                                                        now=ctx.now).select_related("user").order_by("pk"))
        if not switches:
            return RuleResult(self.name, True, None, {"mode": None, "scope": None, "reason": None, "until": None,
                                                      "set_by": None})
        switch = min(switches, key=lambda s: (s.mode != KillSwitchMode.HALTED, s.user_id is not None))
        numbers = {"mode": switch.mode, "scope": "global" if switch.user_id is None else "user",
                   "asset_class": switch.asset_class or None, "reason": switch.reason,
                   "until": calendars.iso_z(switch.until) if switch.until else None, "set_by": switch.set_by}
        if switch.mode == KillSwitchMode.REDUCING and ctx.reduces_only:
            return RuleResult(self.name, True, None, {**numbers, "reduce_only": True})
        scope = ("global switch" if switch.user_id is None else "your switch") + \
            f" for {switch.asset_class or 'all asset classes'}"
        allowed = "no order is placed" if switch.mode == KillSwitchMode.HALTED else \
            "only orders that reduce a position are placed"
        until = f" until {numbers['until']}" if switch.until else ""
        error = TradingHalted(f"{self.name}: trading is {switch.mode} ({scope}{until}), set by {switch.set_by}: "
                              f"{switch.reason or 'no reason given'}; {allowed}", risk_rule=self.name)
        return RuleResult(self.name, False, error, numbers)


class MarketHoursRule:
    """us_equity: NYSE; kr_equity: KRX; crypto never closes. Every broker, the simulator too.

    Needs no snapshot, so a closed market costs no broker call.
    """

    name = "market_hours"

    def evaluate(self, ctx: RiskContext) -> RuleResult:
        asset_class = str(ctx.order.asset_class)
        code = calendars.calendar_code(asset_class)
        if code is None:
            return RuleResult(self.name, True, None, {"calendar": None, "open": True, "closes_at": None,
                                                      "next_open": None})
        try:
            session = calendars.current_or_next_session(asset_class, ctx.now)
        except DomainError as err:  # the calendar cannot answer (CalendarUnavailable): not a denial
            err.risk_rule = self.name
            raise
        open_now = session.contains(ctx.now)
        numbers = {"calendar": code, "open": open_now,
                   "closes_at": calendars.iso_z(session.close) if open_now else None,
                   "next_open": None if open_now else calendars.iso_z(session.open)}
        if open_now:
            return RuleResult(self.name, True, None, numbers)
        error = MarketClosed(f"{self.name}: {code} is closed; next open {numbers['next_open']}", risk_rule=self.name)
        return RuleResult(self.name, False, error, numbers)


class FundsRule:
    """A buy whose notional (qty x entry) exceeds buying power; a sell of more than is held where
    the broker allows no shorting."""

    name = "funds"

    def evaluate(self, ctx: RiskContext) -> RuleResult:
        if ctx.order.side == Side.BUY:
            return self._buy(ctx)
        return self._sell(ctx)

    def _buy(self, ctx: RiskContext) -> RuleResult:
        buying_power, notional = ctx.account.buying_power, ctx.notional
        numbers = {"buying_power": buying_power, "notional": notional, "entry": ctx.entry, "currency": ctx.currency}
        if notional <= buying_power:
            return RuleResult(self.name, True, None, numbers)
        error = InsufficientFunds(
            f"{self.name}: notional {money(notional)} {ctx.currency} exceeds buying power "
            f"{money(buying_power)} {ctx.currency}", risk_rule=self.name)
        return RuleResult(self.name, False, error, numbers)

    def _sell(self, ctx: RiskContext) -> RuleResult:
        held_long = max(ctx.held_qty, Decimal(0))
        numbers = {"held_qty": ctx.held_qty, "qty": ctx.order.qty, "shorting_allowed": ctx.shorting_allowed}
        if ctx.order.qty <= held_long or ctx.shorting_allowed:
            return RuleResult(self.name, True, None, numbers)
        error = InsufficientFunds(f"{self.name}: no shorting: holds {qty_text(held_long)}, "
                                  f"sell {qty_text(ctx.order.qty)}", risk_rule=self.name)
        return RuleResult(self.name, False, error, numbers)


class DailyLossRule:
    """Equity down RISK_DAILY_LOSS_LIMIT_PCT or more from the start of the day: no new exposure.

    Baseline: the account's last_equity where the broker has one, else the first snapshot of the
    UTC day stored per connection (DailyBaseline). Orders that only reduce a position are allowed
    and skip the rule (no account call).
    """

    name = "daily_loss"

    def evaluate(self, ctx: RiskContext) -> RuleResult:
        limit = ctx.limits.daily_loss_limit_pct
        if ctx.reduces_only:
            return RuleResult(self.name, True, None, {"reduce_only": True, "limit_pct": pct(limit)})
        account = ctx.account
        equity = account.equity
        if account.last_equity is not None:
            baseline, source = account.last_equity, "last_equity"
        else:
            stored = DailyBaseline.objects.first_of_day(connection_id=ctx.connection_id,
                                                        day=ctx.now.astimezone(calendars.UTC).date(),
                                                        equity=equity)
            baseline, source = stored.equity, "first_snapshot"
        numbers = {"reduce_only": False, "baseline": baseline, "baseline_source": source, "equity": equity,
                   "change_pct": None, "limit_pct": pct(limit), "currency": account.currency}
        if baseline <= 0:  # nothing to measure a loss against
            return RuleResult(self.name, True, None, numbers)
        drop = (baseline - equity) / baseline
        numbers["change_pct"] = pct(-drop)
        if drop < limit:
            return RuleResult(self.name, True, None, numbers)
        error = RiskRuleViolation(
            f"{self.name}: equity {money(equity)} {account.currency} is down {pct(drop)} % from the start-of-day "
            f"{money(baseline)} ({source}), limit {pct(limit)} %; only orders that reduce a position are allowed",
            risk_rule=self.name)
        return RuleResult(self.name, False, error, numbers)


class TradeRiskRule:
    """An order that opens or adds to a position may risk at most max_trade_risk_pct of equity.

    risk = qty x |entry - stop_loss| with a bracket stop loss, else notional x unprotected_loss_pct.
    Orders that only reduce a position skip it; a sell of more than is held (where shorting is
    allowed) is evaluated on its whole quantity, as opening.
    """

    name = "trade_risk"

    def evaluate(self, ctx: RiskContext) -> RuleResult:
        limit = ctx.limits.max_trade_risk_pct
        if ctx.reduces_only:
            return RuleResult(self.name, True, None, {"reduce_only": True, "limit_pct": pct(limit)})
        order, entry = ctx.order, ctx.entry
        stop = order.bracket.stop_loss if order.bracket is not None else None
        unit_risk = abs(entry - stop) if stop is not None else entry * ctx.limits.unprotected_loss_pct
        risk = order.qty * unit_risk
        equity, currency = ctx.account.equity, ctx.currency
        numbers = {"reduce_only": False, "entry": entry, "stop_used": stop,
                   "unprotected_loss_pct": None if stop is not None else pct(ctx.limits.unprotected_loss_pct),
                   "risk": risk, "equity": equity, "currency": currency, "risk_pct": None,
                   "limit_pct": pct(limit), "max_qty": self._max_qty(ctx, unit_risk)}
        if equity <= 0:
            error = RiskRuleViolation(f"{self.name}: equity is {money(equity)} {currency}; no new position can "
                                      f"be risked", risk_rule=self.name)
            return RuleResult(self.name, False, error, numbers)
        share = risk / equity
        numbers["risk_pct"] = pct(share)
        if share <= limit:
            return RuleResult(self.name, True, None, numbers)
        error = RiskRuleViolation(f"{self.name}: risk {money(risk)} {currency} is {pct(share)} % of equity "
                                  f"{money(equity)}, limit {pct(limit)} %", risk_rule=self.name)
        return RuleResult(self.name, False, error, numbers)

    @staticmethod
    def _max_qty(ctx: RiskContext, unit_risk: Decimal) -> Decimal | None:
        """The largest qty passing funds and trade_risk at this entry and stop (None: unbounded)."""
        equity = ctx.account.equity
        if equity <= 0:
            return Decimal(0)
        bounds = []
        if unit_risk > 0:
            bounds.append(ctx.limits.max_trade_risk_pct * equity / unit_risk)
        if ctx.order.side == Side.BUY:
            if ctx.entry > 0:
                bounds.append(max(ctx.account.buying_power, Decimal(0)) / ctx.entry)
        elif not ctx.shorting_allowed:
            bounds.append(max(ctx.held_qty, Decimal(0)))
        if not bounds:
            return None
        step = ctx.qty_step
        return (min(bounds) / step).to_integral_value(rounding=ROUND_DOWN) * step


# --- formatting ---------------------------------------------------------------------------------

def money(value: Decimal) -> str:
    """2 decimals, half up: 941 -> '941.00'."""
    return format(value.quantize(CENT, rounding=ROUND_HALF_UP), "f")


def pct(fraction: Decimal) -> Decimal:
    """A fraction as a percent with 2 decimals: 0.090987 -> Decimal('9.10')."""
    return (fraction * HUNDRED).quantize(CENT, rounding=ROUND_HALF_UP)


def qty_text(qty: Decimal) -> str:
    """At least 2 decimals, more when the quantity has them: 0.1 -> '0.10', 0.00012 -> '0.00012'."""
    text = format(qty.normalize(), "f")
    if qty == qty.quantize(CENT):
        return format(qty.quantize(CENT), "f")
    return text


def _symbol_key(symbol: str) -> str:
    """Positions and orders name a symbol alike (types.Position); tolerate case and BTC/USD vs BTCUSD."""
    return symbol.upper().replace("/", "")
