from __future__ import annotations

from django.conf import settings
from django.db import models


class EventType(models.TextChoices):
    SUBMITTED = "submitted"  # about to call the broker; the idempotency row is committed with it
    PLACED = "placed"  # the broker accepted the order
    PENDING = "pending"  # the broker's answer was lost; outcome unknown
    REJECTED = "rejected"  # refused at a gate, by a risk rule or by the broker, or nothing placed (502)
    RESOLVED = "resolved"  # a pending order's outcome found later (GET, replay, reconcile_orders)
    CANCELED = "canceled"
    CANCEL_REJECTED = "cancel_rejected"
    # A bracket's exit orders, as the service first sees them at the broker and as they end there
    # (a cancel the user asked for is `canceled`): one leg filled, the other canceled (OCO) or expired.
    LEG_OPENED = "leg_opened"
    LEG_FILLED = "leg_filled"
    LEG_ENDED = "leg_ended"  # canceled by the broker (the other leg filled), expired or rejected: see status


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("broker_order_events is append-only")

    def delete(self):
        raise TypeError("broker_order_events is append-only")


class BrokerOrderEvent(models.Model):
    """One placement, cancel or reject. Written by audit.services.record_order_event only.

    Append-only: no update or delete path in code, and on PostgreSQL a plain SQL trigger
    (migration 0002, not django-pgtrigger: no session setting switches it off) refuses UPDATE,
    DELETE and TRUNCATE in the database itself. A service role set up by `manage.py audit_grants`
    holds no UPDATE, DELETE or TRUNCATE privilege on the table either, and is not its owner, so it
    cannot disable the trigger.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="order_events",
                             db_constraint=False)
    event_type = models.CharField(max_length=20, choices=EventType.choices)
    asset_class = models.CharField(max_length=16, blank=True, default="")
    exchange = models.CharField(max_length=16, blank=True, default="")
    environment = models.CharField(max_length=8, blank=True, default="")
    symbol = models.CharField(max_length=32, blank=True, default="")
    side = models.CharField(max_length=4, blank=True, default="")
    qty = models.DecimalField(max_digits=28, decimal_places=10, null=True, blank=True)
    order_type = models.CharField(max_length=10, blank=True, default="")
    client_order_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    broker_client_id = models.CharField(max_length=64, blank=True, default="")
    broker_order_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    status = models.CharField(max_length=20, blank=True, default="")
    error_code = models.CharField(max_length=40, blank=True, default="")
    error_detail = models.TextField(blank=True, default="")
    risk_rule = models.CharField(max_length=20, blank=True, default="")
    request_body = models.JSONField(default=dict, blank=True)
    broker_reply = models.JSONField(default=dict, blank=True)
    report_uuid = models.UUIDField(null=True, blank=True)
    # The server's own id of the request, always generated here; never taken from the client.
    request_id = models.CharField(max_length=64, blank=True, default="")
    # The client's X-Request-ID, kept only if 1 to 64 of [A-Za-z0-9._:-] (audit.services.RequestMeta).
    client_request_id = models.CharField(max_length=64, blank=True, default="")
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    first_live_order = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        db_table = "broker_order_events"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "broker_order_id"]),
            models.Index(fields=["user", "client_order_id"]),
        ]
        constraints = [
            # Exactly one first live order per user, even under concurrent requests.
            models.UniqueConstraint(fields=["user"], condition=models.Q(first_live_order=True),
                                    name="one_first_live_order_per_user"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.user_id} {self.event_type} {self.client_order_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise TypeError("broker_order_events is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("broker_order_events is append-only")
