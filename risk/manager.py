"""RiskManager v2: gate 4 of a placement (SPEC.md "RiskManager v2").

Runs the rules of risk/rules.py in the spec's order; `check` raises the first denial (its
`risk_rule` names the rule), `evaluate` returns every rule's result for a what-if. The same code
serves both, so a what-if shows exactly what a placement would get.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from django.utils import timezone

from brokers.types import OrderRequest
from risk.models import KillSwitch, RiskProfile
from risk.rules import (DailyLossRule, FundsRule, KillSwitchRule, MarketHoursRule, RiskContext, RiskLimits, RuleResult,
                        TradeRiskRule)

if TYPE_CHECKING:  # the interface only; risk never imports an adapter
    from brokers.base import BrokerAdapter

RULES = (
    KillSwitchRule(),  # -> TRADING_HALTED; needs no snapshot for `halted`
    MarketHoursRule(),
    FundsRule(),
    DailyLossRule(),
    TradeRiskRule(),
)


class RiskManager:
    def __init__(self, limits: RiskLimits | None = None, rules=RULES, user_id=None):
        self.limits = limits or RiskLimits.defaults()
        self.rules = tuple(rules)
        self.user_id = user_id  # whose placement (the kill_switch rule's scope); None: global switches only

    @classmethod
    def for_user(cls, user) -> RiskManager:
        """Limits from the user's RiskProfile; a blank field (or no profile) takes the settings default."""
        return cls.for_profile(RiskProfile.objects.filter(user_id=user.pk).first(), user_id=user.pk)

    @classmethod
    def for_profile(cls, profile: RiskProfile | None, *, user_id) -> RiskManager:
        """Limits from a RiskProfile already read (a placement reads it with its connection, in one
        statement: equity.gates.read_for_placement); a blank field (or None) takes the settings default."""
        defaults = RiskLimits.defaults()
        if profile is None:
            return cls(defaults, user_id=user_id)
        return cls(user_id=user_id, limits=RiskLimits(
            max_trade_risk_pct=_or(profile.max_trade_risk_pct, defaults.max_trade_risk_pct),
            unprotected_loss_pct=_or(profile.unprotected_loss_pct, defaults.unprotected_loss_pct),
            daily_loss_limit_pct=_or(profile.daily_loss_limit_pct, defaults.daily_loss_limit_pct),
        ))

    def evaluate(self, *, order: OrderRequest, adapter: BrokerAdapter, exchange: str, connection_id: int,
                 now: datetime | None = None, stop_at_first_denial: bool = True,
                 kill_switches: Sequence[KillSwitch] | None = None) -> list[RuleResult]:
        """Each rule's result, in order; stops after the first denial unless told not to.

        `kill_switches`: the switches covering this placement at `now`, when the caller has read
        them already (exactly `KillSwitch.objects.covering(...)`'s rows); None: the kill_switch rule
        reads them itself.

        Snapshots (account, positions, latest price) are fetched from the adapter lazily and at
        most once. Errors that are not denials (BrokerUnavailable and the like from the adapter,
        CalendarUnavailable from the calendar) propagate unchanged.
        """
        ctx = RiskContext(order=order, adapter=adapter, exchange=exchange, connection_id=connection_id,
                          now=now or timezone.now(), limits=self.limits, user_id=self.user_id,
                          kill_switches=kill_switches)
        results: list[RuleResult] = []
        for rule in self.rules:
            result = rule.evaluate(ctx)
            results.append(result)
            if not result.ok and stop_at_first_denial:
                break
        return results

    def check(self, *, order: OrderRequest, adapter: BrokerAdapter, exchange: str, connection_id: int,
              now: datetime | None = None) -> None:
        """Raise the first denial's error (TradingHalted, MarketClosed, InsufficientFunds, RiskRuleViolation),
        risk_rule set."""
        for result in self.evaluate(order=order, adapter=adapter, exchange=exchange, connection_id=connection_id,
                                    now=now, stop_at_first_denial=True):
            if not result.ok:
                raise result.error


def _or(value, default):
    return default if value is None else value
