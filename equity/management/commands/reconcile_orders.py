"""Resolve every pending order older than a minute by looking it up at its broker (never a re-send).

Found -> its state. Not found -> still pending, unless the adapter says its records have settled
(absence_settled: a client-id broker's settling time since the last send, KIS's daily inquiry
after the session's close); only then is it absent (rejected). Each resolution is audited, and is
an event of the user's feed (equity.events). The worker runs the same thing periodically
(equity.tasks.reconcile_orders_task).
"""

from datetime import timedelta

from django.core.management.base import BaseCommand

from equity.sync import reconcile_pending_orders


class Command(BaseCommand):
    help = "Look up orders whose placement outcome is unknown and record what the broker says (audited)."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=int, default=60, help="seconds (default 60)")

    def handle(self, older_than, **options):
        report = reconcile_pending_orders(older_than=timedelta(seconds=older_than))
        for order in report.resolved:
            self.stdout.write(f"{order.client_order_id}: {order.status} {order.broker_order_id or ''}".rstrip())
        self.stdout.write(f"resolved {len(report.resolved)}, still pending {report.unresolved}")
