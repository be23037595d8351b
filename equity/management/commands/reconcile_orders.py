"""Resolve every pending order older than a minute by looking it up at its broker (never a re-send).

Found -> its state. Not found -> still pending, unless the adapter says its records have settled
(absence_settled: a client-id broker's settling time since the last send, KIS's daily inquiry
after the session's close); only then is it absent (rejected). Each resolution is audited.
"""

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.db.models import Q
from django.utils import timezone

from brokers.types import OrderStatus
from equity.models import Attempt, Order
from equity.services import STALE_ATTEMPT, resolve_pending


class Command(BaseCommand):
    help = "Look up orders whose placement outcome is unknown and record what the broker says (audited)."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=int, default=60, help="seconds (default 60)")

    def handle(self, older_than, **options):
        cutoff = timezone.now() - timedelta(seconds=older_than)
        pending = (Order.objects.select_related("connection")
                   .filter(status=OrderStatus.PENDING, broker_order_id=None, attempt_started_at__lt=cutoff)
                   .filter(Q(attempt=Attempt.DONE) |
                           Q(attempt=Attempt.IN_FLIGHT, attempt_started_at__lt=timezone.now() - STALE_ATTEMPT))
                   .exclude(broker_client_id=""))
        resolved = unresolved = 0
        for order in pending:
            if order.attempt == Attempt.IN_FLIGHT:
                Order.objects.filter(pk=order.pk, attempt=Attempt.IN_FLIGHT).update(attempt=Attempt.DONE)
            if resolve_pending(order):
                resolved += 1
                self.stdout.write(f"{order.client_order_id}: {order.status} {order.broker_order_id or ''}".rstrip())
            else:
                unresolved += 1
        self.stdout.write(f"resolved {resolved}, still pending {unresolved}")
