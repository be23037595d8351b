from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models

from brokers.fields import EncryptedJSONField
from brokers.types import AssetClass, Environment, Exchange, OrderStatus, OrderType, Side, TimeInForce

MONEY = {"max_digits": 28, "decimal_places": 10}


class BrokerAccount(models.Model):
    """One user's connection to one broker, per asset class and environment."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        INVALID = "invalid"  # the broker refused the stored credentials

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="broker_accounts")
    asset_class = models.CharField(max_length=16, choices=[(a.value, a.value) for a in AssetClass])
    exchange = models.CharField(max_length=16, choices=[(e.value, e.value) for e in Exchange])
    environment = models.CharField(max_length=8, choices=[(e.value, e.value) for e in Environment])
    label = models.CharField(max_length=100, blank=True, default="")
    credentials = EncryptedJSONField(default=dict)
    key_hint = models.CharField(max_length=8, blank=True, default="")  # last 4 characters of the key id
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "asset_class", "environment"],
                                    name="one_connection_per_user_asset_class_environment"),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.asset_class}/{self.environment} via {self.exchange}"

    @property
    def is_live(self) -> bool:
        return self.environment == Environment.LIVE


class TraderProfile(models.Model):
    """Per-user trading settings that only operators change (never the user through the API)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="trader_profile")
    live_enabled = models.BooleanField(default=False)
    live_enabled_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user}: live {'on' if self.live_enabled else 'off'}"


class TokenGeneration(models.Model):
    """Which generation of a user's JWTs is current; an operator's "log out everywhere" bumps it.

    Every token carries the generation it was issued in (brokers.authentication): one from an earlier
    generation is refused on every use, so a bump ends every access and refresh token issued before
    it. No row means generation 0, which a token without the claim also stands for.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="token_generation")
    number = models.PositiveIntegerField(default=0)
    changed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user}: token generation {self.number}"


class KisAccessToken(models.Model):
    """The KIS OAuth token, shared by every worker (issuance is limited to about one a minute)."""

    environment = models.CharField(max_length=8)
    app_key_digest = models.CharField(max_length=64)  # sha256 of the app key; the key itself is not stored here
    token = EncryptedJSONField(default=dict)  # {"access_token": ...}
    expires_at = models.DateTimeField(null=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["environment", "app_key_digest"], name="one_kis_token_per_app")]


# --- The simulator's own exchange tables -------------------------------------------------------

class SimQuote(models.Model):
    asset_class = models.CharField(max_length=16)
    symbol = models.CharField(max_length=32)
    price = models.DecimalField(**MONEY)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["asset_class", "symbol"], name="one_sim_quote_per_symbol")]

    def __str__(self) -> str:
        return f"{self.asset_class} {self.symbol} @ {self.price}"


class SimAccount(models.Model):
    connection = models.OneToOneField(BrokerAccount, on_delete=models.CASCADE, related_name="sim_account")
    currency = models.CharField(max_length=3)
    cash = models.DecimalField(**MONEY)
    reserved_cash = models.DecimalField(**MONEY, default=Decimal("0"))
    last_equity = models.DecimalField(**MONEY)
    last_equity_date = models.DateField()

    def __str__(self) -> str:
        return f"sim account of {self.connection_id}: {self.cash} {self.currency}"

    @property
    def buying_power(self) -> Decimal:
        return self.cash - self.reserved_cash


class SimPosition(models.Model):
    account = models.ForeignKey(SimAccount, on_delete=models.CASCADE, related_name="positions")
    symbol = models.CharField(max_length=32)
    qty = models.DecimalField(**MONEY)
    reserved_qty = models.DecimalField(**MONEY, default=Decimal("0"))  # held by open sell orders
    avg_entry_price = models.DecimalField(**MONEY)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "symbol"], name="one_sim_position_per_symbol")]

    def __str__(self) -> str:
        return f"{self.qty} {self.symbol} @ {self.avg_entry_price}"


class SimOrder(models.Model):
    account = models.ForeignKey(SimAccount, on_delete=models.CASCADE, related_name="orders")
    broker_order_id = models.CharField(max_length=64, unique=True)
    # NULL for bracket legs: several NULLs never collide in unique_sim_client_id.
    broker_client_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="legs")
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4, choices=[(s.value, s.value) for s in Side])
    order_type = models.CharField(max_length=10, choices=[(t.value, t.value) for t in OrderType])
    time_in_force = models.CharField(max_length=3, choices=[(t.value, t.value) for t in TimeInForce])
    qty = models.DecimalField(**MONEY)
    filled_qty = models.DecimalField(**MONEY, default=Decimal("0"))
    avg_fill_price = models.DecimalField(**MONEY, null=True, blank=True)
    limit_price = models.DecimalField(**MONEY, null=True, blank=True)
    stop_price = models.DecimalField(**MONEY, null=True, blank=True)
    stop_limit_price = models.DecimalField(**MONEY, null=True, blank=True)
    triggered = models.BooleanField(default=False)  # a stop order whose stop was crossed
    reserved_cash = models.DecimalField(**MONEY, default=Decimal("0"))  # held from SimAccount.reserved_cash
    reserved_qty = models.DecimalField(**MONEY, default=Decimal("0"))  # held from SimPosition.reserved_qty
    # The bracket of a parent order; its two legs (parent set) are created when it fills.
    take_profit = models.DecimalField(**MONEY, null=True, blank=True)
    stop_loss = models.DecimalField(**MONEY, null=True, blank=True)
    stop_loss_limit = models.DecimalField(**MONEY, null=True, blank=True)
    status = models.CharField(max_length=20, choices=[(s.value, s.value) for s in OrderStatus])
    expires_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["symbol", "status"]),
            models.Index(fields=["account", "status"]),
            # The next expiry of an account's open orders (checked on every adapter call): one index
            # probe, however many orders rest (bench/README.md).
            models.Index(fields=["account", "expires_at"], name="sim_order_open_expiry_idx",
                         condition=models.Q(status__in=["accepted", "partially_filled"])),
            # An account's orders since a time, newest first (list_orders(since=…), which the order
            # list asks for its page's window): without it, a scan of every account's orders.
            models.Index(fields=["account", "-submitted_at", "-id"], name="sim_order_account_time_idx"),
        ]
        constraints = [models.UniqueConstraint(fields=["account", "broker_client_id"], name="unique_sim_client_id")]

    def __str__(self) -> str:
        return f"{self.broker_order_id} {self.side} {self.qty} {self.symbol} {self.order_type} {self.status}"
