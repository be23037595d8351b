"""The audit row in one statement (issue 17): audit.sql chains the row in the database itself, one
statement on PostgreSQL, two on SQLite, and the result is byte for byte what the ORM path (lock the
head, chain.seal, INSERT, UPDATE the head) wrote before it."""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection, connections, transaction
from django.forms.models import model_to_dict
from django.test.utils import CaptureQueriesContext

from audit import chain, sql
from audit.chain import GENESIS_HASH, verify_chain
from audit.models import AuditChainHead, BrokerOrderEvent, EventType
from audit.services import RequestMeta, record_order_event
from brokers.errors import RiskRuleViolation

def _refusal():
    return RiskRuleViolation("over the limit: \"qty\" 1,000 > 10\nsee the profile", risk_rule="max_qty")


# Rows that between them give every kind of content field a non-trivial value (and None where it may be).
VARIANTS = [
    dict(event_type=EventType.SUBMITTED, asset_class="crypto", exchange="sim", environment="paper",
         symbol="BTC/USD", side="buy", qty=Decimal("0.0100000000"), order_type="limit", client_order_id="k-1",
         broker_client_id="b" * 32, status="new",
         meta=RequestMeta(request_id="r" * 32, client_request_id="cli:1.2-3", client_ip="2001:0db8:0:0::1",
                          body={"symbol": "BTC/USD", "qty": 0.01, "limit_price": "30000.5", "nested": [1, None]})),
    dict(event_type=EventType.REJECTED, asset_class="stock", exchange="krx", symbol="005930", side="sell",
         qty=Decimal("12.3456789012"), order_type="market", error=_refusal(), report_uuid=uuid.uuid4(),
         broker_reply={"msg": "주문 거부 — 잔고 부족", "rt_cd": "1", "account_no": "must be scrubbed"},
         meta=RequestMeta(request_id="q" * 32, client_ip="10.0.0.7", body={"symbol": "005930", "qty": 12})),
    dict(event_type=EventType.PLACED, qty=None, report_uuid=str(uuid.uuid4()), risk_rule=None,
         broker_order_id="ord-9", status="accepted", first_live_order=True,
         broker_reply={"broker_order_id": "ord-9", "filled": 0.0, "avg": 1e-7, "ok": True}),
]


def _record(user_id, variant):
    return record_order_event(user_id=user_id, **variant)


def _orm_path(like: BrokerOrderEvent) -> BrokerOrderEvent:
    """What record_order_event did before issue 17, through the ORM, for the same in-memory row: lock the
    head (or create it), chain.seal, INSERT, UPDATE the head. The reference the new path must equal."""
    event = BrokerOrderEvent(**{f.attname: getattr(like, f.attname) for f in chain.content_fields()})
    key = chain.chain_key(event.user_id)
    head = AuditChainHead.objects.select_for_update().filter(chain=key).first()
    if head is None:
        head = AuditChainHead.objects.create(chain=key, hash=GENESIS_HASH)
    chain.seal(event, head.hash)
    event.save(force_insert=True)
    AuditChainHead.objects.filter(pk=head.pk).update(last_event_id=event.pk, hash=event.hash,
                                                      length=head.length + 1, updated_at=event.created_at)
    return event


def _stored(event_id) -> dict:
    row = model_to_dict(BrokerOrderEvent.objects.get(pk=event_id), fields=[
        f.name for f in BrokerOrderEvent._meta.concrete_fields if f.name != "id"])
    with connection.cursor() as cursor:  # and the text the database holds, where a type could hide a difference
        cursor.execute(f"SELECT CAST(request_body AS TEXT), CAST(broker_reply AS TEXT), CAST(qty AS TEXT), "
                       f"CAST(created_at AS TEXT), CAST(client_ip AS TEXT) FROM {BrokerOrderEvent._meta.db_table} "
                       f"WHERE id = %s", [event_id])
        row["as_text"] = cursor.fetchone()
    return row


def _head(key) -> dict:
    head = AuditChainHead.objects.get(chain=key)
    return {"hash": head.hash, "length": head.length, "updated_at": head.updated_at}


def test_the_statements_columns_are_the_models_fields():
    """Every column the raw statements name is one of the two models' own, and the INSERT writes every
    concrete field of the event but its id, in _meta's order."""
    built = sql.statements(connection)
    inserted = re.search(r'INSERT INTO "broker_order_events" \(([^)]*)\)', built.append).group(1)
    event_columns = [f.column for f in BrokerOrderEvent._meta.concrete_fields if f.name != "id"]
    assert [c.strip('"') for c in inserted.split(", ")] == event_columns
    assert [f.column for f in built.values] == [c for c in event_columns if c not in ("prev_hash", "hash")]
    assert set(f.attname for f in built.values) == set(f.attname for f in chain.content_fields())
    head_columns = {f.column for f in AuditChainHead._meta.concrete_fields}
    named = set(re.findall(r'"(\w+)"', built.append + (built.move_head or "")))
    assert named <= set(event_columns) | {"id"} | head_columns | {"broker_order_events", "audit_auditchainhead"}
    assert AuditChainHead._meta.db_table == "audit_auditchainhead"
    # the head's columns it moves: last row, hash, length, time
    moved = re.search(r'UPDATE "audit_auditchainhead" SET (.*?) (FROM|WHERE) ', built.move_head or built.append)
    assert set(re.findall(r'"(\w+)" = ', moved.group(1))) == {"last_event_id", "hash", "length", "updated_at"}
    # bound: the chain key, one value per field, the canonical JSON; SQLite's UPDATE four more
    assert built.append.count("%s") == len(built.values) + 2
    assert built.move_head is None if connection.vendor == "postgresql" else built.move_head.count("%s") == 4


@pytest.mark.parametrize("vendor,returning", [("sqlite", False), ("mysql", True)])
def test_a_database_the_statements_cannot_run_on_is_refused_before_any_write(monkeypatch, vendor, returning):
    monkeypatch.setattr(sql, "_BUILT", {})
    unfit = SimpleNamespace(vendor=vendor, features=SimpleNamespace(can_return_columns_from_insert=returning),
                            ops=connection.ops)
    with pytest.raises(ImproperlyConfigured):
        sql.statements(unfit)


@pytest.mark.django_db
def test_the_sql_sha256_is_hashlibs_on_utf8_text():
    text = '0' * 64 + '{"a":"\\u00e9","b":"x"}' + "é 주문 \u2014"  # ASCII in practice; the rule holds for all text
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sql._sha256_hex(connection.vendor, '%s')}", [text])
        assert cursor.fetchone()[0] == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.django_db
@pytest.mark.parametrize("user_kind", ["user", "global"])
def test_a_row_written_by_the_new_path_is_the_row_the_orm_path_wrote(user, user_kind):
    user_id = user.pk if user_kind == "user" else None
    key = chain.chain_key(user_id)
    _record(user_id, VARIANTS[0])  # not the first: the head exists and has a hash
    for variant in VARIANTS:
        with transaction.atomic():
            new = _record(user_id, variant)
            new_row, new_head = _stored(new.pk), _head(key)
            transaction.set_rollback(True)
        with transaction.atomic():
            old = _orm_path(new)
            old_row, old_head = _stored(old.pk), _head(key)
            transaction.set_rollback(True)
        assert new_row == old_row  # content, prev_hash and hash, as stored and as text
        assert new_head == old_head
        assert (new.prev_hash, new.hash) == (old.prev_hash, old.hash)
        assert new.hash == chain.row_hash(new.prev_hash, chain.canonical_content(new))
    for variant in VARIANTS:
        _record(user_id, variant)
    report = verify_chain(user_id)
    assert (report.ok, report.rows) == (True, 1 + len(VARIANTS)), report.reason


@pytest.mark.django_db
def test_the_returned_event_is_the_stored_row(user):
    event = _record(user.pk, VARIANTS[1])
    assert event.pk is not None and event.id == event.pk and not event._state.adding
    stored = BrokerOrderEvent.objects.get(pk=event.pk)
    assert (stored.prev_hash, stored.hash) == (event.prev_hash, event.hash) == (GENESIS_HASH, stored.hash)
    assert stored.created_at == event.created_at and stored.error_code == "RISK_RULE_VIOLATION"
    with pytest.raises(TypeError):  # still append-only: the instance counts as saved
        event.save()


@pytest.mark.django_db
def test_the_first_event_of_a_new_user_creates_the_head(user):
    key = chain.chain_key(user.pk)
    assert not AuditChainHead.objects.filter(chain=key).exists()
    first = _record(user.pk, VARIANTS[0])
    second = _record(user.pk, VARIANTS[2])
    head = AuditChainHead.objects.get(chain=key)
    assert first.prev_hash == GENESIS_HASH and second.prev_hash == first.hash
    assert (head.last_event_id, head.hash, head.length) == (second.pk, second.hash, 2)
    assert verify_chain(user.pk).ok


@pytest.mark.django_db(transaction=True)
def test_statements_per_row_one_on_postgresql_two_on_sqlite(user):
    _record(user.pk, VARIANTS[0])
    postgres = connection.vendor == "postgresql"
    with CaptureQueriesContext(connection) as autocommit:
        _record(user.pk, VARIANTS[0])
    # PostgreSQL: one statement, its own transaction. SQLite: its two in a transaction of their own.
    assert [q["sql"].split()[0] for q in autocommit.captured_queries] == \
        (["WITH"] if postgres else ["BEGIN", "WITH", "UPDATE", "COMMIT"])
    with transaction.atomic():
        with CaptureQueriesContext(connection) as inside:
            _record(user.pk, VARIANTS[0])
    assert [q["sql"].split()[0] for q in inside.captured_queries] == (["WITH"] if postgres else ["WITH", "UPDATE"])
    assert verify_chain(user.pk).rows == 3 and verify_chain(user.pk).ok


@pytest.mark.django_db
def test_a_second_first_live_row_raises_integrity_error_and_moves_nothing(user):
    first = _record(user.pk, VARIANTS[2])  # first_live_order=True
    before = _head(chain.chain_key(user.pk))
    with pytest.raises(IntegrityError), transaction.atomic():  # the callers' savepoint
        _record(user.pk, VARIANTS[2])
    assert _head(chain.chain_key(user.pk)) == before
    after = _record(user.pk, {**VARIANTS[2], "first_live_order": False})
    assert after.prev_hash == first.hash and verify_chain(user.pk).ok


@pytest.mark.django_db(transaction=True)
def test_in_autocommit_a_failed_row_leaves_the_chain_as_it_was(user):
    first = _record(user.pk, VARIANTS[2])
    with pytest.raises(IntegrityError):
        _record(user.pk, VARIANTS[2])
    assert transaction.get_autocommit()
    assert AuditChainHead.objects.get(chain=chain.chain_key(user.pk)).last_event_id == first.pk
    assert BrokerOrderEvent.objects.filter(user_id=user.pk).count() == 1 and verify_chain(user.pk).ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("first_rows", [False, True], ids=["chain-exists", "first-rows-race"])
def test_concurrent_writers_never_fork_the_chain(user, first_rows):
    """Eight threads append to one chain, half of them holding the head's lock a while inside their
    own transaction, so the others' statements wait on it and go on from the head's newest version.
    With `first_rows`, no head exists yet: every thread's first row races to create it."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: real concurrent transactions")
    if not first_rows:
        _record(user.pk, VARIANTS[0])
    start, errors = threading.Barrier(8), []

    def write(n):
        try:
            start.wait()
            for i in range(6):
                if n % 2:
                    with transaction.atomic():
                        _record(user.pk, {**VARIANTS[i % 2], "client_order_id": f"t{n}-{i}"})
                        time.sleep(0.003)  # the head stays locked until this commit
                else:
                    _record(user.pk, {**VARIANTS[i % 2], "client_order_id": f"t{n}-{i}"})
        except Exception as exc:  # reported below, not lost in the thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    expected = 48 + (0 if first_rows else 1)
    rows = list(BrokerOrderEvent.objects.filter(user=user).order_by("id"))
    assert len(rows) == expected and len({r.prev_hash for r in rows}) == expected  # no fork
    head = AuditChainHead.objects.get(chain=chain.chain_key(user.pk))
    assert (head.length, head.last_event_id, head.hash) == (expected, rows[-1].id, rows[-1].hash)
    report = verify_chain(user.pk)
    assert (report.ok, report.rows) == (True, expected), report.reason


# Written by audit.chain as it was before issue 17 (the _meta walk per row) for the rows below: the
# canonical content resolved once per process must give the same bytes, or old rows stop verifying.
GOLDEN_JSON = (
    '{"asset_class":"stock","broker_client_id":"b","broker_order_id":"","broker_reply":{"msg":"\\uc794\\uace0 '
    '\\ubd80\\uc871"},"client_ip":"2001:db8::1","client_order_id":"k\\"1","client_request_id":"c","created_at":'
    '"2026-12-24T09:30:15.123456Z","environment":"live","error_code":"RISK_REJECTED","error_detail":"line\\nnext '
    '\\u2014 \\"quoted\\"","event_type":"rejected","exchange":"krx","first_live_order":true,"order_type":"limit",'
    '"qty":"12.3456789012","report_uuid":"6f9619ff-8b86-d011-b42d-00c04fc964ff","request_body":{"a":{"b":1e-07},'
    '"price":0.1,"qty":12,"z":[null,true,"\\u00e9"]},"request_id":"r","risk_rule":"max_qty","side":"sell",'
    '"status":"rejected","symbol":"\\uc0bc\\uc131\\uc804\\uc790","user_id":"42"}')
GOLDEN_HASH = "1400ce7ea0ebe01c5b9b04dc10158718a3ec8be102fed05b0aff31995082cd25"  # prev_hash "ab" * 32
GOLDEN_EMPTY = (
    '{"asset_class":"","broker_client_id":"","broker_order_id":"","broker_reply":{},"client_ip":null,'
    '"client_order_id":"","client_request_id":"","created_at":"2026-01-01T00:00:00.000000Z","environment":"",'
    '"error_code":"","error_detail":"","event_type":"placed","exchange":"","first_live_order":false,"order_type":"",'
    '"qty":null,"report_uuid":"00000000-0000-0000-0000-000000000005","request_body":{},"request_id":"","risk_rule":"",'
    '"side":"","status":"","symbol":"","user_id":null}')


def test_the_canonical_content_is_byte_for_byte_what_it_was():
    from datetime import UTC, datetime, timedelta, timezone

    full = BrokerOrderEvent(
        user_id=42, event_type="rejected", asset_class="stock", exchange="krx", environment="live", symbol="삼성전자",
        side="sell", qty=Decimal("12.34567890125"), order_type="limit", client_order_id='k"1', broker_client_id="b",
        broker_order_id="", status="rejected", error_code="RISK_REJECTED", error_detail='line\nnext \u2014 "quoted"',
        risk_rule="max_qty", request_body={"qty": 12, "price": 0.1, "z": [None, True, "é"], "a": {"b": 1e-7}},
        broker_reply={"msg": "잔고 부족"}, report_uuid="6F9619FF-8B86-D011-B42D-00C04FC964FF", request_id="r",
        client_request_id="c", client_ip="2001:0db8:0000:0000:0000:0000:0000:0001", first_live_order=True,
        created_at=datetime(2026, 12, 24, 18, 30, 15, 123456, tzinfo=timezone(timedelta(hours=9))))
    assert chain.canonical_json(chain.canonical_content(full)) == GOLDEN_JSON
    assert chain.row_hash("ab" * 32, chain.canonical_content(full)) == GOLDEN_HASH
    empty = BrokerOrderEvent(user_id=None, event_type="placed", qty=None, report_uuid=uuid.UUID(int=5), client_ip=None,
                             created_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert chain.canonical_json(chain.canonical_content(empty)) == GOLDEN_EMPTY
    # the per-field path (migration 0005's historical models take it) agrees with the cached one
    assert {f.attname: chain._canonical_value(f, getattr(full, f.attname))
            for f in BrokerOrderEvent._meta.concrete_fields if f.name not in ("id", "prev_hash", "hash")} == \
        chain.canonical_content(full)
