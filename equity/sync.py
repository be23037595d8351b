"""Broker state sync: what the periodic tasks (equity.tasks) do.

Every connection with not-yet-final orders is asked for their state with one listing, a few
connections at a time (SYNC_CONCURRENCY threads), each broker's own request pace kept by its
adapter (brokers/pacing.py). Each change found is written through the emit point, which makes one
event of it however many passes see it. A connection whose broker fails is skipped for a while
(exponential backoff, in the cache) and never stops the others.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from django.core.cache import cache
from django.db import connections
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from brokers import sim_exchange
from brokers.conf import conf
from brokers.models import BrokerAccount, SimAccount
from brokers.registry import build_adapter
from brokers.types import OrderStatus
from equity.models import Attempt, Order
from equity.selectors import NOT_FINAL, attach_legs, refresh_unsettled
from equity.services import STALE_ATTEMPT, mark_placed, resolve_pending

logger = logging.getLogger(__name__)

_BACKOFF_KEY = "equity:sync-backoff:{}"


@dataclass
class SyncReport:
    connections: int = 0
    changed: int = 0
    skipped: int = 0  # backing off after a fault
    faults: dict[int, str] = field(default_factory=dict)  # connection id -> what failed
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _unsettled_orders():
    """Placed orders whose state may still change: not final (bracket legs included), and bracket
    orders that filled before any read saw their legs (the sync mirrors them)."""
    no_legs_yet = ~Exists(Order.objects.filter(parent=OuterRef("pk")))
    return (Order.objects.filter(attempt=Attempt.DONE, broker_order_id__isnull=False)
            .filter(Q(status__in=NOT_FINAL)
                    | (Q(status=OrderStatus.FILLED, bracket__isnull=False, parent__isnull=True) & no_legs_yet)))


def connections_with_open_orders():
    return (BrokerAccount.objects.filter(pk__in=_unsettled_orders().values("connection_id"))
            .exclude(status=BrokerAccount.Status.INVALID).order_by("pk"))


def _backing_off(connection_id: int) -> bool:
    try:
        state = cache.get(_BACKOFF_KEY.format(connection_id))
    except Exception:  # noqa: BLE001 - the cache down: sync without backoff rather than not at all
        return False
    return bool(state and state["until"] > timezone.now())


def _note_fault(connection_id: int) -> None:
    try:
        key = _BACKOFF_KEY.format(connection_id)
        faults = (cache.get(key) or {"faults": 0})["faults"] + 1
        delay = min(conf.SYNC_INTERVAL_SECONDS * 2 ** min(faults - 1, 10), 300.0)
        cache.set(key, {"faults": faults, "until": timezone.now() + timedelta(seconds=delay)}, timeout=int(delay) + 60)
    except Exception:  # noqa: BLE001 - the cache down: no backoff is kept, the next round tries again
        logger.warning("sync backoff not recorded: cache unavailable", extra={"connection_id": connection_id})


def _note_success(connection_id: int) -> None:
    try:
        cache.delete(_BACKOFF_KEY.format(connection_id))
    except Exception:  # noqa: BLE001 - the cache down: a stale backoff expires by itself (its timeout)
        logger.warning("sync backoff not cleared: cache unavailable", extra={"connection_id": connection_id})


def sync_connection(connection: BrokerAccount) -> int:
    """Bring the connection's open orders up to its broker's state; how many changed. Raises the
    broker's fault (DomainError) or any other error to the caller, which isolates it."""
    orders = list(_unsettled_orders().filter(connection=connection).select_related("parent")
                  .order_by("submitted_at", "pk")[:conf.SYNC_MAX_ORDERS_PER_CONNECTION])
    if not orders:
        return 0
    attach_legs(orders)
    before = {o.pk: (o.status, o.filled_qty) for o in orders}
    refresh_unsettled(connection, build_adapter(connection), orders)
    return sum(1 for o in orders if (o.status, o.filled_qty) != before[o.pk])


def _sync_one(connection: BrokerAccount, report: SyncReport, threaded: bool) -> None:
    try:
        changed = sync_connection(connection)
        with report.lock:
            report.changed += changed
        _note_success(connection.pk)
    except Exception as exc:  # noqa: BLE001 - one broker's outage (or a bug with it) never stops the others
        logger.warning("broker sync failed for a connection; backing off",
                       extra={"connection_id": connection.pk, "exchange": connection.exchange,
                              "error": f"{type(exc).__name__}: {exc}"})
        with report.lock:
            report.faults[connection.pk] = f"{type(exc).__name__}: {exc}"
        _note_fault(connection.pk)
    finally:
        if threaded:
            connections.close_all()  # this thread's own database connection


def sync_open_orders() -> SyncReport:
    report = SyncReport()
    due = []
    for connection in connections_with_open_orders():
        report.connections += 1
        if _backing_off(connection.pk):
            report.skipped += 1
        else:
            due.append(connection)
    workers = max(1, conf.SYNC_CONCURRENCY)
    if workers == 1 or len(due) <= 1:
        for connection in due:
            _sync_one(connection, report, threaded=False)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="order-sync") as pool:
            list(pool.map(lambda c: _sync_one(c, report, threaded=True), due))
    return report


def expire_sim_orders() -> int:
    """The simulator's day orders whose session has closed, expired (its fills are lazy otherwise);
    the next sync pass turns each into an event."""
    expired = 0
    for account_id in SimAccount.objects.values_list("pk", flat=True):
        expired += sim_exchange.expire_due(account_id=account_id)
    return expired


@dataclass
class ReconcileReport:
    resolved: list[Order] = field(default_factory=list)
    unresolved: int = 0


def reconcile_pending_orders(*, older_than: timedelta = timedelta(seconds=60)) -> ReconcileReport:
    """Resolve every pending order older than `older_than` by looking it up (never a re-send)."""
    now = timezone.now()
    pending = (Order.objects.select_related("connection")
               .filter(status=OrderStatus.PENDING, broker_order_id=None, attempt_started_at__lt=now - older_than)
               .filter(Q(attempt=Attempt.DONE) | Q(attempt=Attempt.IN_FLIGHT, attempt_started_at__lt=now - STALE_ATTEMPT))
               .exclude(broker_client_id=""))
    report = ReconcileReport()
    for order in pending:
        mark_placed(order)
        try:
            resolved = resolve_pending(order)
        except Exception:  # noqa: BLE001 - one order's fault never stops the others
            logger.exception("reconcile failed for an order", extra={"order_id": order.pk})
            resolved = False
        if resolved:
            report.resolved.append(order)
        else:
            report.unresolved += 1
    return report
