"""The audit log's hash chain (SPEC.md "Tamper-evident audit").

Each user's rows, in id order, form one chain: row.prev_hash is the previous row's hash
(GENESIS_HASH for the first) and row.hash = SHA-256(prev_hash + canonical JSON of the row's own
content). The content is every column but id, prev_hash and hash, each as the database gives it
back (decimals normalized, times as ISO-8601 UTC), so a row hashed before its INSERT verifies when
read back on SQLite and PostgreSQL alike, and an auditor can recompute it from an export.

Editing a row breaks its own hash; deleting or inserting one breaks the next row's link; cutting
the tail off is seen against the chain head (AuditChainHead), which names the last row.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal
from functools import lru_cache

from django.db import models

from audit.models import AuditChainHead, BrokerOrderEvent

GENESIS_HASH = "0" * 64
GLOBAL_CHAIN = "global"
_NOT_CONTENT = {"id", "prev_hash", "hash"}


def chain_key(user_id) -> str:
    return GLOBAL_CHAIN if user_id is None else f"user:{user_id}"


def content_fields(model=BrokerOrderEvent) -> list[models.Field]:
    """The hashed columns; `model` may be a migration's historical model (audit migration 0005)."""
    if model is BrokerOrderEvent:
        return list(_content_of_the_model()[0])
    return [f for f in model._meta.concrete_fields if f.name not in _NOT_CONTENT]


@lru_cache(maxsize=1)
def _content_of_the_model() -> tuple[tuple[models.Field, ...], tuple[tuple[str, Callable], ...]]:
    """BrokerOrderEvent's hashed fields and (attname, converter) pairs, resolved once per process: the
    row is hashed on every audit write, and walking _meta and the isinstance ladder per row costs."""
    fields = tuple(f for f in BrokerOrderEvent._meta.concrete_fields if f.name not in _NOT_CONTENT)
    return fields, tuple((f.attname, _converter(f)) for f in fields)


def _converter(field: models.Field) -> Callable:
    """The function that turns one non-null value of `field` into its canonical JSON value."""
    if isinstance(field, models.ForeignKey):
        return str  # an int or a UUID key: the same text either way
    if isinstance(field, models.DecimalField):
        exponent = Decimal(1).scaleb(-field.decimal_places)
        return lambda value: format(Decimal(str(value)).quantize(exponent).normalize(), "f")
    if isinstance(field, models.DateTimeField):
        return lambda value: value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(field, models.JSONField):
        return lambda value: value
    if isinstance(field, models.UUIDField):
        return lambda value: str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
    if isinstance(field, models.BooleanField):
        return bool
    to_python = field.to_python
    return lambda value: str.__str__(to_python(value))  # CharField, TextField, GenericIPAddressField: the text stored


def _canonical_value(field: models.Field, value):
    return None if value is None else _converter(field)(value)


def canonical_content(event: BrokerOrderEvent) -> dict:
    if type(event) is BrokerOrderEvent:
        return {name: (None if (value := getattr(event, name)) is None else convert(value))
                for name, convert in _content_of_the_model()[1]}
    return {f.attname: _canonical_value(f, getattr(event, f.attname)) for f in content_fields(type(event))}


def canonical_json(content: dict) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def row_hash(prev_hash: str, content: dict) -> str:
    return hashlib.sha256((prev_hash + canonical_json(content)).encode()).hexdigest()


def seal(event: BrokerOrderEvent, prev_hash: str) -> None:
    """Set the row's prev_hash and hash, before it is inserted."""
    event.prev_hash = prev_hash
    event.hash = row_hash(prev_hash, canonical_content(event))


@dataclass(frozen=True)
class ChainReport:
    chain: str
    rows: int
    broken_event_id: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason


def verify_chain(user_id) -> ChainReport:
    """Recompute one chain; the report names the first row that does not verify."""
    key = chain_key(user_id)
    rows = BrokerOrderEvent.objects.filter(user_id=user_id).order_by("id") if user_id is not None else \
        BrokerOrderEvent.objects.filter(user_id__isnull=True).order_by("id")
    prev, count, last_id = GENESIS_HASH, 0, None
    for event in rows.iterator(chunk_size=2000):
        count += 1
        if event.prev_hash != prev:
            return ChainReport(key, count, event.id, f"row {event.id}: prev_hash does not link to the previous row "
                                                     f"(a row before it was removed, added or edited)")
        if row_hash(prev, canonical_content(event)) != event.hash:
            return ChainReport(key, count, event.id, f"row {event.id}: its content does not match its hash "
                                                     f"(the row was edited)")
        prev, last_id = event.hash, event.id
    head = AuditChainHead.objects.filter(chain=key).first()
    if head is not None and (head.hash != prev or head.last_event_id != last_id):
        return ChainReport(key, count, last_id, f"the chain ends at row {last_id} but its head names row "
                                                f"{head.last_event_id} (rows were removed from the end)")
    if head is None and count:
        return ChainReport(key, count, last_id, "the chain has rows but no head")
    return ChainReport(key, count)


def chained_user_ids() -> list:
    """Every chain's user id (None: the global chain), in a stable order."""
    ids = list(BrokerOrderEvent.objects.order_by().values_list("user_id", flat=True).distinct())
    return sorted(ids, key=lambda v: (v is not None, str(v)))
