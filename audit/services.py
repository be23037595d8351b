"""record_order_event(): the only writer of BrokerOrderEvent rows."""

from __future__ import annotations

import ipaddress
import re
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache

from django.db import connections, router, transaction
from django.utils import timezone

from audit import chain, sql
from audit.models import AuditChainHead, BrokerOrderEvent, EventType
from brokers.conf import conf

# Account numbers count as secrets under each broker's name for them: account_no (ours, KIS),
# account_number (Alpaca), CANO (KIS's wire field).
_SECRET_KEY_RE = re.compile(r"(secret|key|token|password|authorization|account_?n(o|um)|^cano$|credential|signature)",
                            re.I)


@dataclass(frozen=True)
class RequestMeta:
    """Who asked, from where: carried from the view into every audit row.

    `request_id` is the server's own id of the request, always generated here. `client_request_id`
    is the client's `X-Request-ID`, kept in its own column (never in `request_id`) and only if it is
    1 to 64 of [A-Za-z0-9._:-]; anything else is dropped, not an error.
    """

    request_id: str = ""
    client_ip: str | None = None
    body: dict | None = None
    http_request: object | None = field(default=None, compare=False, repr=False)  # for waffle and ratelimit
    client_request_id: str = ""

    @classmethod
    def of(cls, request) -> RequestMeta:
        meta = request.META
        client_request_id = meta.get("HTTP_X_REQUEST_ID", "")
        if not _CLIENT_REQUEST_ID_RE.fullmatch(client_request_id):
            client_request_id = ""
        body = request.data if isinstance(getattr(request, "data", None), dict) else None
        # The server's id of this request: the one the request log's middleware made (so the log line, the
        # X-Request-ID response header and these rows agree), else a new one.
        request_id = getattr(request, "request_id", None) or uuid.uuid4().hex
        return cls(request_id=request_id, client_request_id=client_request_id, client_ip=client_ip_of(meta),
                   body=scrub(dict(body)) if body is not None else None,
                   http_request=getattr(request, "_request", request))


_CLIENT_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def client_ip_of(meta: dict) -> str | None:
    """The client's address as far as the configured proxies vouch for it.

    By default (TRUSTED_PROXY_COUNT = 0, TRUSTED_PROXIES empty) the peer, REMOTE_ADDR: an
    X-Forwarded-For sent straight to the service is whatever the client wrote, and is ignored.
    Behind proxies, the hops are X-Forwarded-For's entries followed by the peer; walking them from
    the right, a hop is a proxy if it is one of the TRUSTED_PROXY_COUNT nearest or its address is in
    TRUSTED_PROXIES, and the client is the first hop that is not (the right-most untrusted one: the
    entries left of it were written by the client and prove nothing). If every hop is a proxy, the
    left-most one, which a trusted proxy reported. A client hop that is not an IP address is None.
    """
    peer = meta.get("REMOTE_ADDR") or ""
    count = conf.TRUSTED_PROXY_COUNT
    networks = _networks(tuple(conf.TRUSTED_PROXIES))
    if count <= 0 and not networks:
        return _ip_or_none(peer)
    hops = [hop.strip() for hop in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()] + [peer]
    for distance, hop in enumerate(reversed(hops)):
        if distance < count:
            continue
        ip = _ip_or_none(hop)
        if ip is None or not _in_any(ip, networks):
            return ip
    return _ip_or_none(hops[0])


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _in_any(ip: str, networks: tuple) -> bool:
    address = ipaddress.ip_address(ip)
    if address.version == 6 and address.ipv4_mapped:  # ::ffff:10.0.0.1 is 10.0.0.1
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _ip_or_none(value: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(value)) if value else None
    except ValueError:
        return None


def scrub(value):
    """A copy of a JSON-like value with anything that looks secret removed."""
    if isinstance(value, dict):
        return {k: ("[removed]" if _SECRET_KEY_RE.search(str(k)) and k not in _SAFE_KEYS else scrub(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# Fields of an order that match the secret pattern but are not secret.
_SAFE_KEYS = {"client_order_id", "broker_order_id", "broker_client_id"}


@dataclass
class PreparedEvent:
    """An audit row built and hashed in Python, not yet written: record_order_event writes it alone,
    equity.events with the order's own state change (one statement on PostgreSQL)."""

    event: BrokerOrderEvent
    chain_key: str
    content_json: str


def prepare_order_event(*, user_id, event_type: EventType, meta: RequestMeta | None = None,
                        error=None, first_live_order: bool = False, broker_reply: dict | None = None,
                        **fields) -> PreparedEvent:
    """The audit row of record_order_event, with its canonical content, not written."""
    meta = meta or RequestMeta()
    if error is not None:
        fields.setdefault("error_code", error.code)
        fields.setdefault("error_detail", error.detail[:2000])
        if getattr(error, "risk_rule", None):
            fields.setdefault("risk_rule", error.risk_rule)
    event = BrokerOrderEvent(
        user_id=user_id, event_type=event_type, request_id=meta.request_id,
        client_request_id=meta.client_request_id, client_ip=meta.client_ip,
        request_body=meta.body or {}, broker_reply=scrub(broker_reply or {}), first_live_order=first_live_order,
        **{k: ("" if v is None and k not in _NULLABLE else v) for k, v in fields.items()})
    event.created_at = timezone.now()
    # The content's canonical JSON does not depend on prev_hash: hashed here, chained in the database.
    return PreparedEvent(event, chain.chain_key(user_id), chain.canonical_json(chain.canonical_content(event)))


def record_order_event(*, user_id, event_type: EventType, meta: RequestMeta | None = None,
                       error=None, first_live_order: bool = False, broker_reply: dict | None = None,
                       **fields) -> BrokerOrderEvent:
    """Append one audit row to its user's hash chain. Call it inside the transaction that changes
    the order's own state (it makes a transaction of its own otherwise).

    The chain head is locked first (SELECT … FOR UPDATE; on SQLite the database's one write lock), so
    two rows of one user are chained one after the other, never onto the same predecessor. Callers
    take it last, after their own row locks, so the head never waits on a lock its holder needs.
    The row is written by audit.sql: one statement on PostgreSQL, two on SQLite.
    """
    return write_prepared(prepare_order_event(
        user_id=user_id, event_type=event_type, meta=meta, error=error, first_live_order=first_live_order,
        broker_reply=broker_reply, **fields))


def write_prepared(prepared: PreparedEvent) -> BrokerOrderEvent:
    event, key, content_json = prepared.event, prepared.chain_key, prepared.content_json
    connection = connections[router.db_for_write(BrokerOrderEvent)]
    # Inside the caller's transaction the head's lock lasts until its commit, and a failed INSERT
    # rolls back with the caller's block. In autocommit PostgreSQL's one statement is a transaction
    # of its own; SQLite's two need one.
    own = transaction.get_autocommit(using=connection.alias) and sql.statements(connection).move_head is not None
    with transaction.atomic(using=connection.alias) if own else nullcontext():
        if not sql.append_event(connection, event, chain_key=key, content_json=content_json):
            # The chain's first row: no head yet. A concurrent first row may create it as well; the
            # conflict is ignored (no error, so no savepoint), and the append runs again on it.
            AuditChainHead.objects.bulk_create([AuditChainHead(chain=key, hash=chain.GENESIS_HASH)],
                                               ignore_conflicts=True)
            if not sql.append_event(connection, event, chain_key=key, content_json=content_json):
                raise RuntimeError(f"audit chain head {key} could not be created")
    return event


_NULLABLE = {"qty", "report_uuid", "client_ip"}
