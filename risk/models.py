from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

PCT = {"max_digits": 6, "decimal_places": 4}


class RiskProfile(models.Model):
    """Per-user limits an operator may set in admin; a blank field takes the settings default."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="risk_profile")
    max_trade_risk_pct = models.DecimalField(
        **PCT, null=True, blank=True,
        validators=[MinValueValidator(settings.RISK_MIN_TRADE_RISK_PCT), MaxValueValidator(settings.RISK_MAX_TRADE_RISK_CAP)],
        help_text="Fraction of equity one trade may risk: 0.01 to 0.02. Blank: the default.")
    unprotected_loss_pct = models.DecimalField(**PCT, null=True, blank=True,
                                               validators=[MinValueValidator(0), MaxValueValidator(1)],
                                               help_text="Assumed adverse move without a stop loss. Blank: the default.")
    daily_loss_limit_pct = models.DecimalField(**PCT, null=True, blank=True,
                                               validators=[MinValueValidator(0), MaxValueValidator(1)],
                                               help_text="Daily equity drop that stops new exposure. Blank: the default.")

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


class DailyBaseline(models.Model):
    """The first equity snapshot of a trading day, where the broker has no last_equity."""

    connection_id = models.BigIntegerField()
    day = models.DateField()
    equity = models.DecimalField(max_digits=28, decimal_places=10)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection_id", "day"], name="one_baseline_per_day")]
