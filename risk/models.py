from __future__ import annotations

from datetime import date
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

PCT = {"max_digits": 6, "decimal_places": 4}
SMALLEST_PCT = Decimal("0.0001")  # 0.01 %: a zero limit would refuse (or ignore) every order
# The range an operator may give a user's per-trade risk (SPEC.md: 1 % to 2 %). Constants, not
# settings: they are a database constraint, and a host's value must not change the migrations.
MIN_TRADE_RISK_PCT = Decimal("0.01")
MAX_TRADE_RISK_CAP = Decimal("0.02")


class RiskProfile(models.Model):
    """Per-user limits an operator may set in admin; a blank field takes the settings default.

    All limits are fractions (0.02 = 2 %). The admin form shows each default in the help text.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="risk_profile")
    max_trade_risk_pct = models.DecimalField(
        **PCT, null=True, blank=True,
        validators=[MinValueValidator(MIN_TRADE_RISK_PCT),
                    MaxValueValidator(MAX_TRADE_RISK_CAP)],
        help_text="Fraction of equity one trade may risk: 0.01 to 0.02. Blank: the default.")
    unprotected_loss_pct = models.DecimalField(
        **PCT, null=True, blank=True, validators=[MinValueValidator(SMALLEST_PCT), MaxValueValidator(1)],
        help_text="Assumed adverse move without a stop loss. Blank: the default.")
    daily_loss_limit_pct = models.DecimalField(
        **PCT, null=True, blank=True, validators=[MinValueValidator(SMALLEST_PCT), MaxValueValidator(1)],
        help_text="Daily equity drop that stops new exposure. Blank: the default.")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(max_trade_risk_pct__isnull=True)
                | models.Q(max_trade_risk_pct__gte=MIN_TRADE_RISK_PCT,
                           max_trade_risk_pct__lte=MAX_TRADE_RISK_CAP),
                name="risk_profile_trade_risk_in_range"),
            models.CheckConstraint(
                condition=models.Q(unprotected_loss_pct__isnull=True)
                | models.Q(unprotected_loss_pct__gte=SMALLEST_PCT, unprotected_loss_pct__lte=1),
                name="risk_profile_unprotected_loss_in_range"),
            models.CheckConstraint(
                condition=models.Q(daily_loss_limit_pct__isnull=True)
                | models.Q(daily_loss_limit_pct__gte=SMALLEST_PCT, daily_loss_limit_pct__lte=1),
                name="risk_profile_daily_loss_in_range"),
        ]

    def __str__(self) -> str:
        return f"risk profile of {self.user}"

    def clean(self):
        for f in self._meta.fields:
            for v in getattr(f, "validators", []):
                value = getattr(self, f.name)
                if value is not None and isinstance(v, (MinValueValidator, MaxValueValidator)):
                    try:
                        v(value)
                    except ValidationError as e:
                        raise ValidationError({f.name: e.messages})


class DailyBaselineManager(models.Manager):
    def first_of_day(self, *, connection_id: int, day: date, equity: Decimal) -> "DailyBaseline":
        """The day's stored baseline, storing `equity` as it if this is the day's first snapshot.

        Safe under concurrency: the unique (connection_id, day) constraint decides the first writer.
        """
        baseline, _ = self.get_or_create(connection_id=connection_id, day=day, defaults={"equity": equity})
        return baseline


class DailyBaseline(models.Model):
    """The first equity snapshot of a UTC day per broker connection, where the broker has no last_equity."""

    connection_id = models.BigIntegerField()
    day = models.DateField()
    equity = models.DecimalField(max_digits=28, decimal_places=10)

    objects = DailyBaselineManager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection_id", "day"], name="one_baseline_per_day")]

    def __str__(self) -> str:
        return f"baseline of connection {self.connection_id} on {self.day}: {self.equity}"


class KillSwitchMode(models.TextChoices):
    HALTED = "halted", "halted: no placement at all"
    REDUCING = "reducing", "reducing: only orders that reduce a position"


class KillSwitchQuerySet(models.QuerySet):
    def active(self, now=None):
        from django.utils import timezone

        now = now or timezone.now()
        return self.filter(models.Q(until__isnull=True) | models.Q(until__gt=now))

    def covering(self, *, user_id, asset_class: str, now=None):
        """The active switches that cover a placement of this user in this asset class (global ones too)."""
        return self.active(now).filter(models.Q(user_id=user_id) | models.Q(user__isnull=True)).filter(
            models.Q(asset_class="") | models.Q(asset_class=asset_class))


class KillSwitch(models.Model):
    """A stop on placements (SPEC.md "Trader controls"): one per scope, set and released through
    equity.controls only (API, admin, `manage.py kill_switch`), every change audited.

    Scope: `user` (null = global, every user) and `asset_class` ("" = all asset classes). A switch
    is in force until released, or until `until` passes (then it lapses by itself); before `until`
    its user cannot release it or weaken it, an operator can.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                             related_name="kill_switches", help_text="Blank: the global switch, for every user.")
    asset_class = models.CharField(max_length=16, blank=True, default="",
                                   help_text="Blank: every asset class.")
    mode = models.CharField(max_length=10, choices=KillSwitchMode.choices, default=KillSwitchMode.HALTED)
    reason = models.CharField(max_length=200, blank=True, default="")
    until = models.DateTimeField(null=True, blank=True,
                                 help_text="Lapses at this time; blank: until released. Before it only an "
                                           "operator can release the switch.")
    set_by = models.CharField(max_length=200, help_text="Who set it: the user's login, or the operator's.")
    set_by_operator = models.BooleanField(default=False)
    set_at = models.DateTimeField()

    objects = KillSwitchQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "asset_class"], condition=models.Q(user__isnull=False),
                                    name="one_kill_switch_per_user_scope"),
            models.UniqueConstraint(fields=["asset_class"], condition=models.Q(user__isnull=True),
                                    name="one_global_kill_switch_per_scope"),
        ]

    def __str__(self) -> str:
        return f"{self.mode} ({self.scope_text})"

    @property
    def scope_text(self) -> str:
        who = "every user" if self.user_id is None else f"user {self.user}"
        return f"{who}, {self.asset_class or 'all asset classes'}"
