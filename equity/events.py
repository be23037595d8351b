"""The one emit point: every write of an order's `status`, `filled_qty` or placement goes through
save_order_state, which writes the OrderEvent of the change in the same transaction.

"A change" is what the row holds, not what the caller saw: the write is a guarded UPDATE, so two
observers of one fill (a sync pass, a GET, a second sync pass) make one event between them, and an
older observation arriving after a newer one (a sync pass that read the broker before a cancel) is
not written at all: a final status is never left for an open one, a fill never shrinks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC
from functools import lru_cache

from django.db import IntegrityError, connections, router, transaction
from django.db.models import F, Q
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from brokers.types import FINAL_STATUSES
from audit import sql as audit_sql
from audit.services import PreparedEvent, write_prepared
from equity import order_sql
from equity.models import (Attempt, DeliveryStatus, EventStream, Order, OrderEvent, WebhookDelivery,
                           WebhookSubscription)

logger = logging.getLogger(__name__)

_NEVER_WRITTEN = {"id", "user"}
_FINAL = [str(s) for s in FINAL_STATUSES]


def _all_fields() -> list[str]:
    return [f.name for f in Order._meta.concrete_fields if f.name not in _NEVER_WRITTEN]


def order_data(order: Order) -> dict:
    """The order as GET /orders/{id} renders it (OrderResponse, UTC, amounts as JSON numbers)."""
    from equity.serializers import OrderResponse

    with timezone.override(UTC):
        return json.loads(JSONRenderer().render(OrderResponse(order).data))


def save_order_state(order: Order, *, fields: Iterable[str] | None = None, placed: bool = False,
                     where: Q | None = None) -> OrderEvent | None:
    """Write `fields` of `order` (default: all) and, when the stored state changed, its event.

    The state is (status, filled_qty) and, with placed=True, the placement itself (attempt done):
    a 202 pending placement is an event though its status stays pending. `where` replaces the
    default guard (not final, fill not shrinking) for the one write that restarts an order, the new
    attempt of a refused one; `order.written` then says whether the guard held.

    Returns the event, or None when nothing changed (the other fields are still written while the
    stored state equals the caller's) or the caller's view was older than the row's (then `order` is
    reloaded, so the caller goes on with what is stored).
    """
    names = list(dict.fromkeys(fields)) if fields is not None else _all_fields()
    if placed:
        order.attempt = Attempt.DONE
        if "attempt" not in names:
            names.append("attempt")
    values = {Order._meta.get_field(n).attname: getattr(order, Order._meta.get_field(n).attname) for n in names}
    status, filled = str(order.status), order.filled_qty
    rows = Order.objects.filter(pk=order.pk)
    order.written = True
    with transaction.atomic(savepoint=False):
        # The user's stream first, then the order row: every writer takes them in this order, so a
        # transaction that writes several orders of one user (a bracket and its legs) cannot deadlock
        # with one that writes one of them.
        lock_event_stream(order.user_id)
        if where is None:
            # The common write, in plain SQL (equity.order_sql): the default guard and "changed".
            guard, params = _guard_sql(order, status, filled, placed)
            if order_sql.update_row(order, names, where=guard, params=params):
                return _emit(order)
        else:
            changed = ~Q(status=status) | ~Q(filled_qty=filled)
            if placed:
                changed |= ~Q(attempt=Attempt.DONE)
            if rows.filter(where & changed).update(**values):
                return _emit(order)
            # a restart of an unchanged state (pending again): written, no event
            order.written = bool(rows.filter(where).update(**values))
            return None
        others = {k: v for k, v in values.items() if k not in ("status", "filled_qty")}
        if others and rows.filter(status=status, filled_qty=filled).update(**others):
            return None
        if not others and rows.filter(status=status, filled_qty=filled).exists():
            return None
    order.written = False
    order.refresh_from_db()  # the row is ahead of the caller's observation: keep the row's
    return None


def save_order_state_audited(order: Order, audit: PreparedEvent, *, fields: Iterable[str],
                             placed: bool = False) -> OrderEvent | None:
    """save_order_state and the audit row of the change, atomically; the event (or None, as there).

    PostgreSQL, when the stored state changes (the common case: an outcome just received): one
    statement — the stream lock, the guarded UPDATE of the order, its OrderEvent and webhook
    deliveries, and the audit row chained onto the locked head — each lock taken in the order every
    writer takes them (stream, order, head), so it is atomic even in autocommit. Otherwise (nothing
    changed, the caller's view is old, the user's first write or first audit row, SQLite) the same
    writes one by one in one transaction.
    """
    names = list(dict.fromkeys(fields))
    if placed:
        order.attempt = Attempt.DONE
        if "attempt" not in names:
            names.append("attempt")
    connection = connections[router.db_for_write(Order, instance=order)]
    if connection.vendor == "postgresql":
        event = _state_and_audit_in_one_statement(connection, order, names, placed, audit)
        if event is not None:
            order.written = True
            return event
    with transaction.atomic(using=connection.alias):
        event = save_order_state(order, fields=names, placed=placed)
        write_prepared(audit)
    return event


def _state_and_audit_in_one_statement(connection, order: Order, names: list[str], placed: bool,
                                      audit: PreparedEvent) -> OrderEvent | None:
    """The one statement of save_order_state_audited (PostgreSQL); None when it wrote nothing of the
    order's (the stream bump aside, which only counts)."""
    guard, guard_params = _guard_sql(order, str(order.status), order.filled_qty, placed)
    update, fields = order_sql.update_sql(Order, connection.alias, names, guard)
    event = OrderEvent(user_id=order.user_id, order_id=order.pk, type=f"order.{order.status}",
                       data=order_data(order), created_at=timezone.now())
    before, ev_fields = _outcome_ctes(connection.alias, update)
    values = [f.get_db_prep_save(getattr(order, f.attname), connection) for f in fields]
    user_id = order_sql.db_value(EventStream, "user", order.user_id, instance=order)
    params = [user_id, *values, order.pk, *guard_params, audit.chain_key,
              *[f.get_db_prep_save(f.pre_save(event, True), connection) for f in ev_fields],
              str(DeliveryStatus.PENDING), event.created_at, event.created_at, user_id, event.type]
    row = audit_sql.append_event_after(
        connection, audit.event, chain_key=audit.chain_key, content_json=audit.content_json, before=before,
        before_params=params, gate="ev", extra_select="ev.id, (SELECT array_agg(id) FROM d)", extra_from="ev")
    if row is None:
        return None
    event.pk, deliveries = row
    event._state.adding, event._state.db = False, connection.alias
    if deliveries:
        transaction.on_commit(lambda: _enqueue_deliveries(list(deliveries)), using=connection.alias)
    return event


@lru_cache(maxsize=64)
def _outcome_ctes(alias: str, update: str) -> tuple[str, tuple]:
    """The CTEs before the audit row in the outcome's one statement, built once per (database, UPDATE
    text: its fields and guard), and the OrderEvent fields whose values the `ev` CTE binds."""
    connection = connections[alias]
    qn = connection.ops.quote_name
    ev_fields = tuple(f for f in OrderEvent._meta.concrete_fields if not f.primary_key)
    subs, delivery = WebhookSubscription._meta, WebhookDelivery._meta

    def sc(name):
        return f"sub.{qn(subs.get_field(name).column)}"

    def dc(name):
        return qn(delivery.get_field(name).column)

    writes = order_sql.column(EventStream, "writes")
    before = (
        f"s AS (UPDATE {order_sql.table(EventStream)} SET {writes} = {writes} + 1 "
        f"WHERE {order_sql.column(EventStream, 'user')} = %s RETURNING 1), "
        f"o AS ({update} AND EXISTS (SELECT 1 FROM s) AND {audit_sql.head_exists_sql(connection)} "
        f"RETURNING {qn(Order._meta.pk.column)}), "
        f"ev AS (INSERT INTO {qn(OrderEvent._meta.db_table)} ({', '.join(qn(f.column) for f in ev_fields)}) "
        f"SELECT {', '.join(['%s'] * len(ev_fields))} FROM o RETURNING {qn(OrderEvent._meta.pk.column)} AS id), "
        # The deliveries of the user's matching subscriptions (WebhookSubscription.matches), with the event.
        f"d AS (INSERT INTO {qn(delivery.db_table)} ({dc('subscription')}, {dc('event')}, {dc('status')}, "
        f"{dc('attempts')}, {dc('next_attempt_at')}, {dc('created_at')}) "
        f"SELECT {sc('id')}, ev.id, %s, 0, %s, %s FROM ev, {qn(subs.db_table)} sub "
        f"WHERE {sc('user')} = %s AND {sc('active')} AND ({sc('events')} @> '[\"*\"]'::jsonb "
        f"OR {sc('events')} @> jsonb_build_array(%s::text)) RETURNING {qn(delivery.pk.column)} AS id)")
    return before, ev_fields


def _guard_sql(order: Order, status: str, filled, placed: bool) -> tuple[str, list]:
    """The default guard (not final, fill not shrinking) and "the stored state changed", as SQL."""
    status_col, filled_col = order_sql.column(Order, "status"), order_sql.column(Order, "filled_qty")
    filled_value = order_sql.db_value(Order, "filled_qty", filled, instance=order)
    changed = f"{status_col} <> %s OR {filled_col} <> %s"
    params = [status, filled_value]
    if placed:
        changed += f" OR {order_sql.column(Order, 'attempt')} <> %s"
        params.append(str(Attempt.DONE))
    if status in _FINAL:
        # One final state to another is a correction of the service's own guess (a cancel taken as done
        # when the read-back failed, while the broker filled it): a broker's order has one final state.
        return f"{filled_col} <= %s AND ({changed})", [filled_value, *params]
    final = ", ".join(["%s"] * len(_FINAL))
    return (f"{status_col} NOT IN ({final}) AND {filled_col} <= %s AND ({changed})",
            [*_FINAL, filled_value, *params])


def _bump_stream(user_id) -> bool:
    with connections[router.db_for_write(EventStream)].cursor() as cursor:
        cursor.execute(f"UPDATE {order_sql.table(EventStream)} SET {order_sql.column(EventStream, 'writes')} = "
                       f"{order_sql.column(EventStream, 'writes')} + 1 WHERE {order_sql.column(EventStream, 'user')} = %s",
                       [order_sql.db_value(EventStream, "user", user_id)])  # a host's UUID key as its column holds it
        return cursor.rowcount > 0


def _any_subscription_sql() -> str:
    subs = WebhookSubscription
    return (f"SELECT COUNT(*) FROM {order_sql.table(subs)} WHERE {order_sql.column(subs, 'user')} = %s "
            f"AND {order_sql.column(subs, 'active')}")


def lock_event_stream(user_id) -> None:
    """Lock the user's EventStream row until the end of the transaction (created on first use).
    Taken before any order row that the transaction then writes (see save_order_state)."""
    if _bump_stream(user_id):
        return
    try:
        with transaction.atomic():
            EventStream.objects.create(user_id=user_id, writes=1)
    except IntegrityError:  # created by a concurrent first write: wait for its lock
        EventStream.objects.filter(user_id=user_id).update(writes=F("writes") + 1)


def _emit(order: Order) -> OrderEvent:
    """The event of the change just written; the caller holds the user's stream lock."""
    now = timezone.now()
    event = OrderEvent(user_id=order.user_id, order_id=order.pk, type=f"order.{order.status}",
                       data=order_data(order), created_at=now)
    # One round trip: the event, and whether the user has an active subscription at all (rarely).
    subscribed = order_sql.insert_row(event, also=_any_subscription_sql(),
                                      also_params=[order_sql.db_value(WebhookSubscription, "user", order.user_id)])
    if not subscribed:
        return event
    subscriptions = [s for s in WebhookSubscription.objects.filter(user_id=order.user_id, active=True)
                     if s.matches(event.type)]
    if subscriptions:
        deliveries = WebhookDelivery.objects.bulk_create(
            [WebhookDelivery(subscription=s, event=event, status=DeliveryStatus.PENDING, next_attempt_at=now,
                             created_at=now) for s in subscriptions])
        ids = [d.pk for d in deliveries if d.pk is not None] or list(
            WebhookDelivery.objects.filter(event=event).values_list("pk", flat=True))
        transaction.on_commit(lambda: _enqueue_deliveries(ids))
    return event


def _enqueue_deliveries(ids: list[int]) -> None:
    """Hand the deliveries to the worker. Never fails the caller: a delivery whose task is lost (the
    queue down, the process gone) is still due in the table, and deliver_due_webhooks sends it."""
    from equity.tasks import deliver_webhook

    for delivery_id in ids:
        try:
            deliver_webhook.enqueue(delivery_id)
        except Exception:  # noqa: BLE001 - any queue fault; the sweeper has it
            logger.warning("could not enqueue a webhook delivery; the sweeper will send it",
                           extra={"delivery_id": delivery_id}, exc_info=True)


def record_new_order(order: Order) -> OrderEvent:
    """The event of an order row that the service did not place itself but found at the broker and
    inserted with its state (a bracket's leg): its first state is a change. Call in the insert's
    transaction."""
    lock_event_stream(order.user_id)
    return _emit(order)
