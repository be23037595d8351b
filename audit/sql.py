"""The audit row's write as raw SQL: one statement on PostgreSQL, two on SQLite (issue 17).

record_order_event runs on every placement twice; through the ORM it took SELECT … FOR UPDATE of the
chain head, INSERT of the row, UPDATE of the head (plus BEGIN/COMMIT in autocommit), ~0.4 ms of
Python each. Here the row is chained by the database itself:

- PostgreSQL, one data-modifying CTE: `h` locks the head (FOR UPDATE; READ COMMITTED hands back the
  head's newest version once a lock wait ends), `e` inserts the row with prev_hash = h.hash and
  hash = SHA-256(h.hash || canonical JSON), `u` moves the head onto the inserted row. All three share
  one snapshot: `e` reads the head only through `h` (so after the lock), and `u` updates the row
  `h` locked (PostgreSQL follows it to that same newest version); each row is modified once. A
  single statement is its own transaction in autocommit.
- SQLite (no DML in a CTE): the same INSERT … SELECT from the head, with Django's registered SHA256()
  function, then one UPDATE of the head; SQLite serializes writers, and the two run in the caller's
  transaction (or one of their own in autocommit).

The canonical JSON of the row's content does not depend on prev_hash, so Python computes it (as
audit.chain does for every row) and passes it bound; the database only prepends the head's hash and
hashes. The columns come from the models' _meta, the values through each field's
get_db_prep_save(), so the row is stored exactly as the ORM would store it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.db import models

from audit import chain
from audit.models import AuditChainHead, BrokerOrderEvent


@dataclass(frozen=True)
class Statements:
    append: str  # inserts the row chained onto the locked head; RETURNING id, prev_hash, hash
    move_head: str | None  # SQLite's second statement; None where `append` moves the head too
    values: tuple[models.Field, ...]  # the fields whose values `append` binds, in order (after the chain key)


def _sha256_hex(vendor: str, text: str) -> str:
    """SQL for the lowercase hex SHA-256 of `text`'s UTF-8 bytes (hashlib's hexdigest())."""
    if vendor == "postgresql":
        return f"encode(sha256(convert_to({text}, 'UTF8')), 'hex')"
    # django.db.backends.sqlite3._functions registers SHA256(text) = sha256(text.encode()).hexdigest()
    return f"SHA256({text})"


def statements(connection) -> Statements:
    """The SQL text for the connection's vendor, built once per process."""
    built = _BUILT.get(connection.vendor)
    if built is None:
        if connection.vendor not in ("postgresql", "sqlite"):
            raise ImproperlyConfigured(f"the audit log is written for PostgreSQL and SQLite, not {connection.vendor}")
        if not connection.features.can_return_columns_from_insert:  # SQLite before 3.35
            raise ImproperlyConfigured("the audit log needs INSERT … RETURNING (SQLite 3.35 or later)")
        built = _BUILT[connection.vendor] = _build(connection.vendor, connection.ops.quote_name)
    return built


_BUILT: dict[str, Statements] = {}


def _build(vendor: str, quote) -> Statements:
    event, head = BrokerOrderEvent._meta, AuditChainHead._meta

    def e(name):
        return quote(event.get_field(name).column)

    def h(name):
        return quote(head.get_field(name).column)

    # Bound by value: the hashed content, every concrete field but id (the database's) and the two
    # hashes (computed in SQL).
    values = tuple(chain.content_fields())
    events_table, head_table = quote(event.db_table), quote(head.db_table)
    columns = ", ".join([quote(f.column) for f in values] + [e("prev_hash"), e("hash")])
    postgres = vendor == "postgresql"
    locked_head = _locked_head_sql(quote, "") if postgres else (
        f"h AS (SELECT {h('id')}, {h('hash')} FROM {head_table} WHERE {h('chain')} = %s)")
    prev_hash = f"h.{h('hash')}"
    returning = [e("id"), e("prev_hash"), e("hash")]

    def insert(returned):
        return (f"INSERT INTO {events_table} ({columns}) "
                f"SELECT {', '.join(['%s'] * len(values))}, {prev_hash}, {_sha256_hex(vendor, prev_hash + ' || %s')} "
                f"FROM h RETURNING {', '.join(returned)}")
    if postgres:
        append = (f"WITH {_locked_head_sql(quote, '')}, "
                  f"e AS ({insert([*returning, e('created_at')])}), "
                  f"u AS (UPDATE {head_table} SET {h('last_event_id')} = e.{e('id')}, {h('hash')} = e.{e('hash')}, "
                  f"{h('length')} = {head_table}.{h('length')} + 1, {h('updated_at')} = e.{e('created_at')} "
                  f"FROM h, e WHERE {head_table}.{h('id')} = h.{h('id')}) "
                  f"SELECT e.{e('id')}, e.{e('prev_hash')}, e.{e('hash')} FROM e")
        return Statements(append=append, move_head=None, values=values)
    move_head = (f"UPDATE {head_table} SET {h('last_event_id')} = %s, {h('hash')} = %s, "
                 f"{h('length')} = {h('length')} + 1, {h('updated_at')} = %s WHERE {h('chain')} = %s")
    return Statements(append=f"WITH {locked_head} {insert(returning)}", move_head=move_head, values=values)


def _locked_head_sql(quote, gate: str) -> str:
    """The CTE `h`: the chain head, locked (PostgreSQL); with `gate`, only when that CTE returned rows
    (a one-time filter, evaluated before the head is locked: the gate's own row locks come first)."""
    head = AuditChainHead._meta
    gated = f" AND EXISTS (SELECT 1 FROM {gate})" if gate else ""
    return (f"h AS (SELECT {quote(head.get_field('id').column)}, {quote(head.get_field('hash').column)} "
            f"FROM {quote(head.db_table)} WHERE {quote(head.get_field('chain').column)} = %s{gated} FOR UPDATE)")


def head_exists_sql(connection) -> str:
    """SQL true when the chain named by the one parameter has a head (for a `before` CTE's guard)."""
    head, quote = AuditChainHead._meta, connection.ops.quote_name
    return f"EXISTS (SELECT 1 FROM {quote(head.db_table)} WHERE {quote(head.get_field('chain').column)} = %s)"


_AFTER: dict[tuple, str] = {}


def append_event_after(connection, event: BrokerOrderEvent, *, chain_key: str, content_json: str, before: str,
                       before_params: list, gate: str, extra_select: str = "", extra_from: str = "") -> tuple | None:
    """PostgreSQL only: the caller's data-modifying CTEs (`before`: "name AS (…), …") and the audit
    row in one statement, so the caller's write and its audit row commit together even in
    autocommit. The row is appended only when the CTE `gate` returned rows; `before` must write
    nothing unless the chain's head exists (guard it with head_exists_sql), so that a statement
    that appends nothing wrote nothing but what the caller can redo.

    Returns the values of `extra_select` (a tuple, empty without it), event's id and hashes set; None
    when nothing was appended (the gate was empty).
    """
    if connection.vendor != "postgresql":
        raise ImproperlyConfigured("append_event_after is PostgreSQL's: SQLite has no DML in a CTE")
    key = (before, gate, extra_select, extra_from)
    text = _AFTER.get(key)
    if text is None:
        one = statements(connection).append  # WITH h AS (…), e AS (…), u AS (…) SELECT … FROM e
        head_cte = _locked_head_sql(connection.ops.quote_name, "")
        assert one.startswith(f"WITH {head_cte}, ")
        rest, _, select = one[len(f"WITH {head_cte}, "):].rpartition(" SELECT ")
        columns, _, source = select.partition(" FROM ")
        text = (f"WITH {before}, {_locked_head_sql(connection.ops.quote_name, gate)}, {rest} "
                f"SELECT {columns}{', ' + extra_select if extra_select else ''} "
                f"FROM {source}{', ' + extra_from if extra_from else ''}")
        _AFTER[key] = text
    sql = statements(connection)
    params = [*before_params, chain_key]
    params += [f.get_db_prep_save(getattr(event, f.attname), connection) for f in sql.values]
    params.append(content_json)
    with connection.cursor() as cursor:
        cursor.execute(text, params)
        row = cursor.fetchone()
    if row is None:
        return None
    event.id, event.prev_hash, event.hash = row[:3]
    event._state.adding, event._state.db = False, connection.alias
    return tuple(row[3:])


def append_event(connection, event: BrokerOrderEvent, *, chain_key: str, content_json: str) -> bool:
    """Insert `event` chained onto its chain's head and move the head onto it; set its id, prev_hash
    and hash. False (and nothing written) when the chain has no head yet.

    On SQLite the caller provides the transaction that holds both statements.
    """
    sql = statements(connection)
    params = [chain_key]
    params += [f.get_db_prep_save(getattr(event, f.attname), connection) for f in sql.values]
    params.append(content_json)
    with connection.cursor() as cursor:
        cursor.execute(sql.append, params)
        row = cursor.fetchone()
        if row is None:
            return False
        event.id, event.prev_hash, event.hash = row
        if sql.move_head is not None:
            cursor.execute(sql.move_head, [event.id, event.hash, _updated_at(event.created_at, connection),
                                           chain_key])
    event._state.adding, event._state.db = False, connection.alias
    return True


def _updated_at(value, connection):
    return AuditChainHead._meta.get_field("updated_at").get_db_prep_save(value, connection)
