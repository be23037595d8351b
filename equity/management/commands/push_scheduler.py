"""Enqueue the periodic tasks of pushed order updates, each on its interval (EQUITY_ORDERS keys).

A task is enqueued again only once its previous run has finished, so a slow broker never piles
up sync passes. The worker that runs them is the backend's own (`manage.py db_worker` for the
database backend; `make run` starts both). `--once` enqueues each task one time and exits.
"""

from __future__ import annotations

import logging
import time

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from brokers.conf import conf
from equity import tasks

logger = logging.getLogger(__name__)


def schedule() -> list[tuple[object, float]]:
    return [(tasks.deliver_due_webhooks, conf.WEBHOOK_SWEEP_SECONDS),
            (tasks.sync_open_orders, conf.SYNC_INTERVAL_SECONDS),
            (tasks.expire_sim_orders, conf.SYNC_INTERVAL_SECONDS),
            (tasks.reconcile_orders_task, conf.RECONCILE_INTERVAL_SECONDS)]


class Command(BaseCommand):
    help = "Enqueue the broker sync, the simulator's expiry, reconcile_orders and the webhook sweeper periodically."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="enqueue each periodic task once and exit")

    def handle(self, once=False, **options):
        last: dict[str, tuple[float, object]] = {}
        while True:
            for job, interval in schedule():
                name = job.name
                previous = last.get(name)
                if previous and (time.monotonic() - previous[0] < interval or not self._finished(previous[1])):
                    continue
                try:
                    last[name] = (time.monotonic(), job.enqueue())
                except Exception:  # noqa: BLE001 - the queue down: try again next tick
                    logger.warning("could not enqueue a periodic task", extra={"task": name}, exc_info=True)
            if once:
                return
            close_old_connections()  # as between requests: a dropped database connection is replaced
            time.sleep(1)

    @staticmethod
    def _finished(result) -> bool:
        try:
            result.refresh()
        except Exception:  # noqa: BLE001 - a result pruned or unreadable: enqueue again
            return True
        return result.is_finished
