"""The worker's tasks, on Django's task API (django-tasks, the backport of Django 6's django.tasks).

Whatever backend TASKS names runs them: the database (django-tasks-db, `manage.py db_worker`) by
default, RQ on Redis (django-tasks-rq) by settings only. Arguments and results are plain JSON.
`manage.py push_scheduler` enqueues the periodic ones.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from django_tasks import task

from equity import sync, webhooks


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@task()
def deliver_webhook(delivery_id: int) -> str:
    """One delivery's attempt, enqueued when its event commits (the sweeper catches any task lost)."""
    return webhooks.deliver(delivery_id, worker=_worker_name())


@task()
def deliver_due_webhooks() -> dict:
    """Retries on schedule, first tries whose task was lost, and claims whose worker died."""
    return webhooks.deliver_due(worker=_worker_name())


@task()
def sync_open_orders() -> dict:
    report = sync.sync_open_orders()
    return {"connections": report.connections, "changed": report.changed, "skipped": report.skipped,
            "faults": {str(k): v for k, v in report.faults.items()}}


@task()
def expire_sim_orders() -> int:
    return sync.expire_sim_orders()


@task()
def reconcile_orders_task(older_than_seconds: int = 60) -> dict:
    report = sync.reconcile_pending_orders(older_than=timedelta(seconds=older_than_seconds))
    return {"resolved": len(report.resolved), "unresolved": report.unresolved}
