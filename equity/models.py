from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models

from brokers.fields import EncryptedJSONField
from brokers.models import BrokerAccount
from brokers.types import OrderStatus

MONEY = {"max_digits": 28, "decimal_places": 10}


class Attempt(models.TextChoices):
    """Where the service is with the user's idempotency key."""

    IN_FLIGHT = "in_flight"  # claimed; gates or the broker call under way
    DONE = "done"  # placed (or outcome unknown): a repeat replays it
    FAILED = "failed"  # nothing placed (gate, risk, broker refusal, 502): a repeat is a new attempt


class LegRole(models.TextChoices):
    """Which exit of a bracket a leg is; the suffix of its order_id."""

    TAKE_PROFIT = "tp", "take-profit"  # the limit leg
    STOP_LOSS = "sl", "stop-loss"  # the stop or stop-limit leg


class Order(models.Model):
    """The idempotency row and the service's last known state of one order.

    Written before the broker is called; unique (user, client_order_id) makes two requests with
    one key at the same moment collapse into one broker order.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="orders")
    client_order_id = models.CharField(max_length=64)
    request_fingerprint = models.CharField(max_length=64)
    attempt = models.CharField(max_length=10, choices=Attempt.choices, default=Attempt.IN_FLIGHT)
    attempt_started_at = models.DateTimeField()

    connection = models.ForeignKey(BrokerAccount, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="orders")
    asset_class = models.CharField(max_length=16)
    exchange = models.CharField(max_length=16, blank=True, default="")
    environment = models.CharField(max_length=8)
    currency = models.CharField(max_length=3, blank=True, default="")
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4)
    order_type = models.CharField(max_length=10)  # as the user asked: stop_limit stays stop_limit
    time_in_force = models.CharField(max_length=3)
    qty = models.DecimalField(**MONEY)
    limit_price = models.DecimalField(**MONEY, null=True, blank=True)
    stop_price = models.DecimalField(**MONEY, null=True, blank=True)
    bracket = models.JSONField(null=True, blank=True)
    report_uuid = models.UUIDField(null=True, blank=True)

    broker_client_id = models.CharField(max_length=64, blank=True, default="")
    broker_order_id = models.CharField(max_length=64, null=True, blank=True)
    status = models.CharField(max_length=20, choices=[(s.value, s.value) for s in OrderStatus],
                              default=OrderStatus.PENDING)
    filled_qty = models.DecimalField(**MONEY, default=Decimal("0"))
    avg_fill_price = models.DecimalField(**MONEY, null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)

    # A bracket order's exit order as the broker reports it (equity.services.mirror_legs): a row of its
    # own, so it is listed, read and canceled like any order, with its parent and its role.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="legs")
    leg = models.CharField(max_length=2, choices=LegRole.choices, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "client_order_id"], name="one_order_per_user_key"),
        ]
        indexes = [
            models.Index(fields=["user", "asset_class", "environment", "attempt", "-submitted_at"],
                         name="order_list_idx"),
            models.Index(fields=["user", "broker_order_id"], name="order_broker_id_idx"),
            models.Index(fields=["attempt", "status"], name="order_pending_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.client_order_id} {self.side} {self.qty} {self.symbol} ({self.status})"

    @property
    def live(self) -> bool:
        return self.environment == "live"

    @property
    def is_leg(self) -> bool:
        return self.parent_id is not None


class OrderTally(models.Model):
    """How many placed orders (attempt done) a user has per asset class, environment and status.

    Written only by database triggers on equity_order (migration 0003), never by Python: every
    write path — services, the list's refresh, reconcile_orders, admin, a raw UPDATE — keeps it
    right, and the list's `total` is one indexed read instead of a count over the user's whole
    history (bench/README.md: the count was most of the list's time at 100,000 orders).
    """

    # No database FK: when a user is deleted, Django may delete these rows before the orders, whose
    # delete trigger then writes a (negative) row for a user about to vanish.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_constraint=False,
                             related_name="+")
    asset_class = models.CharField(max_length=16)
    environment = models.CharField(max_length=8)
    status = models.CharField(max_length=20)
    n = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "asset_class", "environment", "status"], name="one_tally_per_key"),
        ]

    def __str__(self) -> str:
        return f"user {self.user_id} {self.asset_class} {self.environment} {self.status}: {self.n}"


# --- Order updates pushed (SPEC.md "Order updates pushed") ----------------------------------------

class OrderEvent(models.Model):
    """One change of an order's state, as the user's own feed shows it: written only by
    equity.events.save_order_state, in the transaction of the change. Never updated."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=32)  # order.<status>
    data = models.JSONField()  # the order as OrderResponse rendered it at the change
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["user", "id"], name="order_event_feed_idx")]

    def __str__(self) -> str:
        return f"event {self.pk} {self.type} order {self.order_id}"


class EventStream(models.Model):
    """One row per user, locked by every state write of that user's orders until its commit.

    Event ids come from one sequence, assigned at insert; without the lock, an event of a later id
    could commit before an earlier one, and a feed read in between (after=<the later id>) would skip
    the earlier one for good. Under it, a user's events commit in id order, so the feed has no gaps.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
                                related_name="+")
    writes = models.BigIntegerField(default=0)  # state writes of the user's orders, counted as the lock is taken

    def __str__(self) -> str:
        return f"event stream of user {self.user_id}: {self.writes} writes"


class WebhookSubscription(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    url = models.URLField(max_length=2000)
    events = models.JSONField()  # ["order.filled", ...] or ["*"]
    # {"secret": "whsec_<base64>"}, encrypted at rest like broker credentials; shown once, at creation.
    signing = EncryptedJSONField(default=dict)
    active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=300, blank=True, default="")
    disabled_at = models.DateTimeField(null=True, blank=True)
    failing_since = models.DateTimeField(null=True, blank=True)  # first failure since the last success
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["user", "active"], name="webhook_user_active_idx")]

    def __str__(self) -> str:
        return f"webhook {self.pk} of user {self.user_id} -> {self.url}"

    @property
    def secret(self) -> str:
        return self.signing["secret"]

    def matches(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # due at next_attempt_at
    SENDING = "sending"  # claimed by a worker until lease_until
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up: the subscription was disabled or deleted


class WebhookDelivery(models.Model):
    """One event to one subscription; written with the event, sent by the worker (at least once)."""

    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(OrderEvent, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["subscription", "event"], name="one_delivery_per_event")]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_delivery_due_idx")]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"delivery {self.pk} of event {self.event_id} ({self.status})"


class WebhookAttempt(models.Model):
    """Every try of a delivery, as it went: read-only in admin."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.IntegerField()
    worker = models.CharField(max_length=100, blank=True, default="")
    started_at = models.DateTimeField()
    latency_ms = models.IntegerField(null=True, blank=True)
    status_code = models.IntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="one_attempt_per_number")]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}: {self.status_code or self.error}"
