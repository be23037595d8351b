"""Ownership: an order is the caller's only if it is in the caller's audit trail."""

from __future__ import annotations

from django.db.models import Q

from audit.models import BrokerOrderEvent


def owned_order_event(*, user_id: int, order_ref: str) -> BrokerOrderEvent | None:
    """The caller's newest event naming this broker_order_id or client_order_id, else None."""
    return (BrokerOrderEvent.objects.filter(user_id=user_id)
            .filter(Q(broker_order_id=order_ref) | Q(client_order_id=order_ref))
            .exclude(event_type="rejected", broker_order_id="")
            .only("id", "client_order_id", "broker_order_id").first())


def has_live_placement(*, user_id: int) -> bool:
    return BrokerOrderEvent.objects.filter(user_id=user_id, first_live_order=True).exists()
