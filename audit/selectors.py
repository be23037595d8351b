"""Ownership: an order is the caller's only if it is in the caller's audit trail."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from audit.models import BrokerOrderEvent


def owned_order_events(*, user_id: int, order_ref: str) -> QuerySet[BrokerOrderEvent]:
    """The caller's events naming this broker_order_id or client_order_id (a refusal before any broker
    order, which names none, does not count): the order is the caller's if there is one. Also used as
    an EXISTS inside the order's own read (equity.selectors.owned_order), one statement for both."""
    return (BrokerOrderEvent.objects.filter(user_id=user_id)
            .filter(Q(broker_order_id=order_ref) | Q(client_order_id=order_ref))
            .exclude(event_type="rejected", broker_order_id=""))


def owned_order_event(*, user_id: int, order_ref: str) -> BrokerOrderEvent | None:
    """The caller's newest event naming this broker_order_id or client_order_id, else None."""
    return owned_order_events(user_id=user_id, order_ref=order_ref).only("id", "client_order_id",
                                                                         "broker_order_id").first()


def has_live_placement(*, user_id: int) -> bool:
    return BrokerOrderEvent.objects.filter(user_id=user_id, first_live_order=True).exists()
