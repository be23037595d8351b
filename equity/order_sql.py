"""The placement path's writes of equity's own rows, as plain SQL (bench/README.md "A placement, step
by step").

An ORM statement costs about 0.4 ms of Python before it reaches the database, a plain one through
`connection.cursor()` about 0.05 ms; a placement writes its Order row three times (the claim, the
route before the broker call, the outcome) and one OrderEvent, so those statements are written here.
Table and column names come from the models' `_meta`, and every value goes through its field's
`get_db_prep_save`, so a row written here is the row the ORM would write
(tests/equity/test_order_sql.py pins both). Everything off the hot path stays ORM.
"""

from __future__ import annotations

from functools import lru_cache

from django.db import connections, router
from django.db.models import Model


@lru_cache(maxsize=64)
def _insert_sql(model: type[Model], alias: str, also: str) -> tuple[str, tuple, bool]:
    meta, connection = model._meta, connections[alias]
    fields = tuple(f for f in meta.concrete_fields if not f.primary_key)
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in fields)
    sql = f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"
    returns = connection.features.can_return_columns_from_insert
    if returns:
        sql += f" RETURNING {qn(meta.pk.column)}" + (f", ({also})" if also else "")
    return sql, fields, returns


def insert_row(instance: Model, *, also: str = "", also_params=()):
    """INSERT the instance (every concrete field but its auto primary key) and set its pk; a unique
    violation raises IntegrityError, as Model.save(force_insert=True) does.

    `also`: a scalar SQL expression the same round trip returns (RETURNING …, (also)); its value is
    the result (None where the database cannot return from an INSERT: it is then a query of its own).
    """
    model = type(instance)
    alias = router.db_for_write(model, instance=instance)
    connection = connections[alias]
    sql, fields, returns = _insert_sql(model, alias, also)
    params = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields]
    extra = None
    with connection.cursor() as cursor:
        if returns:
            cursor.execute(sql, [*params, *also_params] if also else params)
            row = cursor.fetchone()
            pk, extra = row[0], (row[1] if also else None)
        else:
            cursor.execute(sql, params)
            pk = cursor.lastrowid
            if also:
                cursor.execute(f"SELECT ({also})", list(also_params))
                extra = cursor.fetchone()[0]
    instance.pk = pk
    instance._state.adding, instance._state.db = False, alias
    return extra


@lru_cache(maxsize=256)
def _update_sql(model: type[Model], alias: str, names: tuple[str, ...], where: str) -> tuple[str, tuple]:
    meta = model._meta
    fields = tuple(meta.get_field(name) for name in names)
    qn = connections[alias].ops.quote_name
    sets = ", ".join(f"{qn(f.column)} = %s" for f in fields)
    sql = f"UPDATE {qn(meta.db_table)} SET {sets} WHERE {qn(meta.pk.column)} = %s"
    if where:
        sql += f" AND ({where})"
    return sql, fields


def update_sql(model: type[Model], alias: str, names, where: str = "") -> tuple[str, tuple]:
    """update_row's statement and the fields of its SET values (then the pk, then where's params)."""
    return _update_sql(model, alias, tuple(names), where)


def update_row(instance: Model, names, *, where: str = "", params=()) -> int:
    """UPDATE the named fields of the instance's row, `AND (where)` when given; the rows written (0/1).

    `where` is SQL over the table's own columns, from where_columns(); its values go in `params`.
    """
    model = type(instance)
    alias = router.db_for_write(model, instance=instance)
    connection = connections[alias]
    sql, fields = _update_sql(model, alias, tuple(names), where)
    values = [f.get_db_prep_save(getattr(instance, f.attname), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, instance.pk, *params])
        return cursor.rowcount


def column(model: type[Model], name: str) -> str:
    """A field's quoted column name, for where clauses."""
    return connections[router.db_for_write(model)].ops.quote_name(model._meta.get_field(name).column)


def table(model: type[Model]) -> str:
    return connections[router.db_for_write(model)].ops.quote_name(model._meta.db_table)


def db_value(model: type[Model], name: str, value, *, instance: Model | None = None):
    """A value as the ORM binds it for this field (a where clause's parameter)."""
    connection = connections[router.db_for_write(model, instance=instance)]
    return model._meta.get_field(name).get_db_prep_save(value, connection)


def update_row_audited(instance: Model, names, audit) -> None:
    """update_row and the audit row of the write (an audit.services.PreparedEvent), atomically.

    PostgreSQL: one statement (the UPDATE as a CTE, then the audit row chained onto the locked head),
    atomic even in autocommit; it writes nothing unless the chain's head exists, and the user's very
    first audit row (no head yet) takes the path of other databases: both in one transaction.
    """
    from audit import sql as audit_sql
    from audit.services import write_prepared
    from django.db import transaction

    model = type(instance)
    alias = router.db_for_write(model, instance=instance)
    connection = connections[alias]
    if connection.vendor == "postgresql":
        qn = connection.ops.quote_name
        sql, fields = _update_sql(model, alias, tuple(names), "")
        values = [f.get_db_prep_save(getattr(instance, f.attname), connection) for f in fields]
        before = f"w AS ({sql} AND {audit_sql.head_exists_sql(connection)} RETURNING {qn(model._meta.pk.column)})"
        if audit_sql.append_event_after(connection, audit.event, chain_key=audit.chain_key,
                                        content_json=audit.content_json, before=before,
                                        before_params=[*values, instance.pk, audit.chain_key], gate="w") is not None:
            return
    with transaction.atomic(using=alias):
        update_row(instance, names)
        write_prepared(audit)
