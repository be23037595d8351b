"""Seed a bench database fast, in the shapes the service itself writes; print the tokens as JSON.

    DJANGO_SETTINGS_MODULE=config.settings      python -m bench.seed project OUT.json
    DJANGO_SETTINGS_MODULE=bench.floor.settings python -m bench.seed floor   OUT.json

Project: the simulator quotes BTC/USD and ETH/USD; 50 "post" users (crypto sim connection made
through brokers.services.connect_broker, two positions, 100 orders each) and three "list"
users with 100, 10,000 and 100,000 orders. Each seeded order is the three things a placement
leaves behind: an equity.models.Order (attempt done), its audit rows (submitted + placed, and
canceled where it was canceled) and its simulator order, all written with PostgreSQL COPY. The
status mix is a long-lived account's: 10 % still resting (accepted, cash reserved), 60 %
filled, 30 % canceled, spread one every 30 s back from now, interleaved.

Floor: the same user names, and Items for the list users (100, 10,000, 100,000).

Columns are taken from the models' _meta, so a field that another change adds with a default
(or a nullable one) is seeded with that default.
"""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal

import django

N_POST_USERS = 50
LIST_SIZES = {"l100": 100, "l10k": 10_000, "l100k": 100_000}
ORDERS_PER_POST_USER = 100
GET_IDS_PER_USER = 20  # how many of each post user's order ids the GET-one script picks from
QTY = Decimal("0.0001")
LIMIT = Decimal("40000")  # below the 50000 quote: a resting buy
SPACING = timedelta(seconds=30)


def _status_of(i: int) -> str:
    r = i % 10
    if r == 0:
        return "accepted"
    if r <= 6:
        return "filled"
    return "canceled"


_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_TEXT = {
    str: lambda v: v.translate(_ESCAPE),
    bool: lambda v: "t" if v else "f",
    int: str,
    Decimal: str,
    datetime: datetime.isoformat,
    date: date.isoformat,
    uuid.UUID: str,
}


def _copy(model, rows: list[dict]) -> None:
    """COPY rows (dicts of attname -> Python value) into model's table; missing fields take defaults.

    Values are written in COPY's text format directly (a converter per Python type): going through
    each field's get_db_prep_save costs ten times more for half a million rows.
    """
    from django.db import connection

    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    cols = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    table = connection.ops.quote_name(model._meta.db_table)
    plan = []
    for f in fields:
        if f.has_default():
            default = f.get_default()
        elif f.null:
            default = None
        else:
            default = "" if f.get_internal_type() in ("CharField", "TextField") else None
        plan.append((f.attname, default, f.get_internal_type() == "JSONField"))

    def text(value, is_json):
        if value is None:
            return "\\N"
        if is_json:
            return json.dumps(value).translate(_ESCAPE)
        convert = _TEXT.get(type(value))
        if convert is None:  # an enum member (StrEnum default) or another str / int subclass
            return str(value.value if hasattr(value, "value") else value).translate(_ESCAPE)
        return convert(value)

    with connection.cursor() as cur:
        with cur.cursor.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
            chunk = []
            for row in rows:
                chunk.append("\t".join(text(row.get(name, default), is_json) for name, default, is_json in plan))
                if len(chunk) >= 5000:
                    copy.write("\n".join(chunk) + "\n")
                    chunk = []
            if chunk:
                copy.write("\n".join(chunk) + "\n")


def _vacuum(*models) -> None:
    """VACUUM ANALYZE: the state autovacuum leaves a table in, which old rows are in (visibility map
    set, so counts can be index-only scans; statistics for the planner)."""
    from django.db import connection

    with connection.cursor() as cur:
        for model in models:
            cur.execute(f"VACUUM ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


def _token(user) -> str:
    from rest_framework_simplejwt.tokens import AccessToken

    return str(AccessToken.for_user(user))


def _users(names: list[str]):
    from django.contrib.auth import get_user_model

    User = get_user_model()
    User.objects.bulk_create([User(username=n, email=f"{n}@bench.invalid", password="!") for n in names])
    return {u.username: u for u in User.objects.filter(username__in=names)}


def _chain(events: list[dict]) -> dict:
    """Hash-chain the seeded audit rows per user, in the order COPY gives them their ids (audit.chain),
    so that verify_audit passes on a seeded database and new rows chain onto the seeded ones."""
    from audit import chain
    from audit.models import BrokerOrderEvent

    heads: dict = {}
    for row in events:
        event = BrokerOrderEvent(**row)
        chain.seal(event, heads.get(row["user_id"], (chain.GENESIS_HASH, 0))[0])
        row["prev_hash"], row["hash"] = event.prev_hash, event.hash
        heads[row["user_id"]] = (event.hash, heads.get(row["user_id"], ("", 0))[1] + 1)
    return heads


def _store_heads(heads: dict) -> None:
    from django.db.models import Max

    from audit import chain
    from audit.models import AuditChainHead, BrokerOrderEvent

    last = dict(BrokerOrderEvent.objects.filter(user_id__in=list(heads)).values("user_id")
                .annotate(last=Max("id")).values_list("user_id", "last"))
    AuditChainHead.objects.bulk_create([
        AuditChainHead(chain=chain.chain_key(user_id), hash=digest, length=length, last_event_id=last[user_id])
        for user_id, (digest, length) in heads.items()])


def seed_project() -> dict:
    from django.db import transaction
    from django.utils import timezone

    from audit.models import BrokerOrderEvent
    from brokers.models import SimAccount, SimOrder, SimPosition
    from brokers.services import connect_broker
    from brokers.sim_exchange import set_quote
    from equity.models import Order

    set_quote("crypto", "BTC/USD", "50000")
    set_quote("crypto", "ETH/USD", "3000")
    post_names = [f"bench-u{i:02d}" for i in range(N_POST_USERS)]
    users = _users(post_names + list(LIST_SIZES))
    now = timezone.now()
    accounts = {}
    for name, user in users.items():
        conn = connect_broker(user=user, asset_class="crypto", exchange="sim", environment="paper",
                              label="bench", credentials={})
        accounts[name] = (conn, SimAccount.objects.get(connection=conn))

    orders, events, sims = [], [], []
    get_ids: dict[str, list[str]] = {}
    reserved: dict[int, Decimal] = {}

    def add_orders(name: str, count: int) -> None:
        user = users[name]
        conn, account = accounts[name]
        ids = get_ids.setdefault(name, [])
        for i in range(count):
            at = now - SPACING * (count - i)
            status = _status_of(i)
            client_id, broker_client_id = f"seed-{name}-{i}", uuid.uuid4().hex
            broker_id = f"sim-{uuid.uuid4().hex}"
            filled = status == "filled"
            body = {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": str(QTY),
                    "order_type": "limit", "limit_price": str(LIMIT), "client_order_id": client_id}
            common = dict(asset_class="crypto", symbol="BTC/USD", side="buy", qty=QTY, order_type="limit")
            sims.append(dict(
                account_id=account.pk, broker_order_id=broker_id, broker_client_id=broker_client_id, parent_id=None,
                symbol="BTC/USD", side="buy", order_type="limit", time_in_force="gtc", qty=QTY,
                filled_qty=QTY if filled else Decimal(0), avg_fill_price=LIMIT if filled else None,
                limit_price=LIMIT, triggered=False, reserved_cash=QTY * LIMIT if status == "accepted" else Decimal(0),
                reserved_qty=Decimal(0), status=status, expires_at=None, submitted_at=at,
                updated_at=at + (SPACING / 2 if status != "accepted" else timedelta(0))))
            if status == "accepted":
                reserved[account.pk] = reserved.get(account.pk, Decimal(0)) + QTY * LIMIT
            orders.append(dict(
                user_id=user.pk, client_order_id=client_id,
                request_fingerprint=hashlib.sha256(client_id.encode()).hexdigest(), attempt="done",
                attempt_started_at=at, connection_id=conn.pk, exchange="sim", environment="paper", currency="USD",
                time_in_force="gtc", limit_price=LIMIT, stop_price=None, bracket=None, report_uuid=None,
                broker_client_id=broker_client_id, broker_order_id=broker_id, status=status,
                filled_qty=QTY if filled else Decimal(0), avg_fill_price=LIMIT if filled else None,
                submitted_at=at, updated_at=at + (SPACING / 2 if status != "accepted" else timedelta(0)), **common))
            audit = dict(user_id=user.pk, exchange="sim", environment="paper", client_order_id=client_id,
                         broker_client_id=broker_client_id, request_body=body, request_id=uuid.uuid4().hex,
                         client_ip="127.0.0.1", first_live_order=False, report_uuid=None, **common)
            events.append(dict(audit, event_type="submitted", broker_order_id="", status="pending", created_at=at))
            events.append(dict(audit, event_type="placed", broker_order_id=broker_id, status="accepted",
                               broker_reply={"broker_order_id": broker_id, "status": "accepted",
                                             "filled_qty": "0E-10", "avg_fill_price": None}, created_at=at))
            if status == "canceled":
                events.append(dict(audit, event_type="canceled", broker_order_id=broker_id, status="canceled",
                                   request_body={}, created_at=at + SPACING / 2))
            if len(ids) < GET_IDS_PER_USER and i % 3 == 0:
                ids.append(broker_id)

    for name in post_names:
        add_orders(name, ORDERS_PER_POST_USER)
    for name, count in LIST_SIZES.items():
        add_orders(name, count)

    heads = _chain(events)
    with transaction.atomic():
        _copy(SimOrder, sims)
        _copy(Order, orders)
        _copy(BrokerOrderEvent, events)
        _store_heads(heads)
        for name in post_names:
            _, account = accounts[name]
            SimPosition.objects.create(account=account, symbol="BTC/USD", qty=Decimal("0.5"),
                                       avg_entry_price=Decimal("45000"))
            SimPosition.objects.create(account=account, symbol="ETH/USD", qty=Decimal("2"),
                                       avg_entry_price=Decimal("2800"))
        for name, (_, account) in accounts.items():
            account.reserved_cash = reserved.get(account.pk, Decimal(0))
            if name in post_names:
                account.cash -= Decimal("0.5") * 45000 + 2 * 2800
                account.last_equity = account.cash + Decimal("0.5") * 50000 + 2 * 3000
            account.save()
    _vacuum(SimOrder, Order, BrokerOrderEvent, SimAccount)
    return {
        "post_tokens": [_token(users[n]) for n in post_names],
        "get_one": [[_token(users[n]), oid] for n in post_names for oid in get_ids[n]],
        "list_tokens": {n: _token(users[n]) for n in LIST_SIZES},
        "rows": {"orders": len(orders), "audit_events": len(events), "sim_orders": len(sims)},
    }


def seed_floor() -> dict:
    from django.db import transaction
    from django.utils import timezone

    from bench.floor.models import Item

    post_names = [f"bench-u{i:02d}" for i in range(N_POST_USERS)]
    users = _users(post_names + list(LIST_SIZES))
    now = timezone.now()
    rows = []
    for name, count in LIST_SIZES.items():
        for i in range(count):
            rows.append(dict(user_id=users[name].pk, client_order_id=f"seed-{name}-{i}", symbol="BTC/USD",
                             side="buy", qty=QTY, limit_price=LIMIT, created_at=now - SPACING * (count - i)))
    with transaction.atomic():
        _copy(Item, rows)
    _vacuum(Item)
    return {"post_tokens": [_token(users[n]) for n in post_names],
            "list_tokens": {n: _token(users[n]) for n in LIST_SIZES}, "rows": {"items": len(rows)}}


def main(argv: list[str]) -> None:
    target, out = argv[1], argv[2]
    django.setup()
    data = seed_project() if target == "project" else seed_floor()
    with open(out, "w") as fh:
        json.dump(data, fh)
    print(f"seeded {target}: {data['rows']}")


if __name__ == "__main__":
    main(sys.argv)
