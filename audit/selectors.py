"""Ownership: an order is the caller's only if it is in the caller's audit trail."""

from __future__ import annotations

from django.db import connections, router
from django.db.models import BooleanField, Q, QuerySet
from django.db.models.expressions import RawSQL

from audit.models import BrokerOrderEvent


def owned_order_events(*, user_id: int, order_ref: str) -> QuerySet[BrokerOrderEvent]:
    """The caller's events naming this broker_order_id or client_order_id (a refusal before any broker
    order, which names none, does not count): the order is the caller's if there is one."""
    return (BrokerOrderEvent.objects.filter(user_id=user_id)
            .filter(Q(broker_order_id=order_ref) | Q(client_order_id=order_ref))
            .exclude(event_type="rejected", broker_order_id=""))


def owned_order_exists_sql(*, user_id: int, order_ref: str) -> RawSQL:
    """`owned_order_events(...)` as an EXISTS for another statement's select list (the order's own read).

    Plain SQL because the ORM's Exists() of that queryset cost 0.35 ms more Python per read (one
    process, PostgreSQL: the order's read 1.39 ms of CPU with this, 1.73 with Exists(), 1.91 as two
    queries). The same conditions; table and column names from the model, values bound as the ORM
    binds them (pinned to owned_order_events by tests/audit/test_owned_order_sql.py).
    """
    meta = BrokerOrderEvent._meta
    connection = connections[router.db_for_read(BrokerOrderEvent)]
    qn = connection.ops.quote_name
    user, broker_id, client_id, kind = (meta.get_field(n) for n in ("user", "broker_order_id", "client_order_id",
                                                                    "event_type"))
    sql = (f"EXISTS (SELECT 1 FROM {qn(meta.db_table)} WHERE {qn(user.column)} = %s"
           f" AND ({qn(broker_id.column)} = %s OR {qn(client_id.column)} = %s)"
           f" AND NOT ({qn(broker_id.column)} = %s AND {qn(kind.column)} = %s))")
    params = [user.get_db_prep_value(user_id, connection), broker_id.get_db_prep_value(order_ref, connection),
              client_id.get_db_prep_value(order_ref, connection), broker_id.get_db_prep_value("", connection),
              kind.get_db_prep_value("rejected", connection)]
    return RawSQL(sql, params, output_field=BooleanField())


def owned_order_event(*, user_id: int, order_ref: str) -> BrokerOrderEvent | None:
    """The caller's newest event naming this broker_order_id or client_order_id, else None."""
    return owned_order_events(user_id=user_id, order_ref=order_ref).only("id", "client_order_id",
                                                                         "broker_order_id").first()


def has_live_placement(*, user_id: int) -> bool:
    return BrokerOrderEvent.objects.filter(user_id=user_id, first_live_order=True).exists()
