"""Writes: place_order and cancel_order.

A placement is "check, then send": the gates run top to bottom in place_order; the idempotency
row is committed before the broker is called, and no transaction is held open across a broker
call (commit in-flight row, call, commit outcome + audit row).

Never a second broker order (SPEC.md "When the broker fails during a placement"): an attempt gets
a new broker client id only when the previous one was refused for certain (before sending, by the
broker, or never sent). After a lost answer a lookup that finds nothing proves nothing; for a
broker with client ids the proof is a re-send under the same client id, which the broker refuses
as a duplicate if the first one arrived. Whatever stays undecided is `pending` (202).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from brokers.conf import conf
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from audit.models import EventType
from audit.services import RequestMeta, prepare_order_event, record_order_event
from brokers.base import BrokerAdapter
from brokers.models import BrokerAccount
from brokers.registry import BotRegistry, build_adapter
from brokers.types import (FINAL_STATUSES, AssetClass, Bracket, BrokerOrder, Environment, OrderRequest, OrderStatus,
                           OrderType, Side, TimeInForce)
from brokers.errors import (BrokerNotConfigured, BrokerOutcomeUnknown, BrokerUnavailable, CredentialsRefused,
                               DomainError, IdempotencyConflict, IdempotencyInProgress)
from equity import order_sql
from equity.alerts import send_first_live_alert
from equity.events import lock_event_stream, record_new_order, save_order_state, save_order_state_audited
from equity.gates import check_flags, check_rate, read_for_placement
from equity.models import Attempt, LegRole, Order
from risk.manager import RiskManager
from risk.models import KillSwitch

logger = logging.getLogger(__name__)

# An attempt still "in flight" after this long belongs to a worker that died mid-request.
STALE_ATTEMPT = timedelta(minutes=2)


@dataclass
class Placed:
    order: Order
    http_status: int
    headers: dict = field(default_factory=dict)


def default_time_in_force(asset_class: str) -> str:
    return TimeInForce.GTC if asset_class == AssetClass.CRYPTO else TimeInForce.DAY


def _fingerprint(fields: dict) -> str:
    def norm(v):
        if isinstance(v, Decimal):
            return str(v.normalize())
        if isinstance(v, dict):
            return {k: norm(x) for k, x in sorted(v.items()) if x is not None}
        if isinstance(v, uuid.UUID):
            return str(v)
        return v

    canonical = {k: norm(v) for k, v in sorted(fields.items()) if k != "client_order_id" and v is not None}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _audit_fields(order: Order) -> dict:
    return dict(asset_class=order.asset_class, exchange=order.exchange, environment=order.environment,
                symbol=order.symbol, side=order.side, qty=order.qty, order_type=order.order_type,
                client_order_id=order.client_order_id, broker_client_id=order.broker_client_id,
                broker_order_id=order.broker_order_id or "", report_uuid=order.report_uuid, status=order.status)


def to_broker_request(order: Order) -> OrderRequest:
    """The broker layer's form: stop_limit collapses to stop + stop_limit_price (SPEC.md)."""
    is_stop_limit = order.order_type == OrderType.STOP_LIMIT
    bracket = None
    if order.bracket:
        bracket = Bracket(take_profit=Decimal(str(order.bracket["take_profit"])),
                          stop_loss=Decimal(str(order.bracket["stop_loss"])),
                          stop_loss_limit=(Decimal(str(order.bracket["stop_loss_limit"]))
                                           if order.bracket.get("stop_loss_limit") is not None else None))
    return OrderRequest(
        asset_class=AssetClass(order.asset_class), symbol=order.symbol, side=Side(order.side), qty=order.qty,
        order_type=OrderType.STOP if is_stop_limit else OrderType(order.order_type),
        time_in_force=TimeInForce(order.time_in_force), broker_client_id=order.broker_client_id,
        limit_price=None if is_stop_limit else order.limit_price, stop_price=order.stop_price,
        stop_limit_price=order.limit_price if is_stop_limit else None, bracket=bracket)


def apply_broker_state(order: Order, broker: BrokerOrder) -> list[str]:
    """Copy the broker's view onto our row; returns the changed field names."""
    changes = {
        "broker_order_id": broker.broker_order_id, "status": broker.status, "filled_qty": broker.filled_qty,
        "avg_fill_price": broker.avg_fill_price, "submitted_at": order.submitted_at or broker.submitted_at,
        "updated_at": broker.updated_at,
    }
    changed = [k for k, v in changes.items() if getattr(order, k) != v]
    for k in changed:
        setattr(order, k, changes[k])
    return changed


# --- Idempotency --------------------------------------------------------------------------------

def order_from_fields(*, user, key: str, fields: dict, live: bool, now=None) -> Order:
    """The Order row of a request, not saved: a placement saves it as its idempotency row, a
    what-if checks it and throws it away."""
    bracket = fields.get("bracket")
    return Order(
        user=user, client_order_id=key, attempt=Attempt.IN_FLIGHT, attempt_started_at=now or timezone.now(),
        asset_class=fields["asset_class"], environment=Environment.LIVE if live else Environment.PAPER,
        symbol=fields["symbol"], side=fields["side"], order_type=fields["order_type"],
        time_in_force=fields["time_in_force"], qty=fields["qty"], limit_price=fields.get("limit_price"),
        stop_price=fields.get("stop_price"),
        bracket={k: (str(v) if v is not None else None) for k, v in bracket.items()} if bracket else None,
        report_uuid=fields.get("report_uuid"), status=OrderStatus.PENDING)


@dataclass
class _Claim:
    order: Order
    replay: bool


def _claim_key(*, user, key: str, fingerprint: str, fields: dict, live: bool) -> _Claim:
    """Insert the idempotency row, or find the one a previous request with this key wrote."""
    now = timezone.now()
    # In autocommit the INSERT is a transaction of its own, and a unique violation leaves the
    # connection usable: BEGIN + COMMIT around it would be two round trips for nothing. Inside a
    # caller's transaction (tests, a caller's atomic block) a failed INSERT aborts it on PostgreSQL,
    # so only there does it need a savepoint for the lookup below to run after an IntegrityError.
    try:
        with nullcontext() if transaction.get_autocommit() else transaction.atomic():
            order = order_from_fields(user=user, key=key, fields=fields, live=live, now=now)
            order.request_fingerprint = fingerprint
            order_sql.insert_row(order)
        return _Claim(order, replay=False)
    except IntegrityError:
        pass

    existing = Order.objects.get(user=user, client_order_id=key)
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict(
            f"client_order_id {key!r} was used with a different request.",
            errors={"client_order_id": [f"{key!r} was used with a different request; use a new key."]})
    if existing.attempt == Attempt.DONE:
        return _Claim(existing, replay=True)
    if existing.attempt == Attempt.IN_FLIGHT and existing.attempt_started_at > now - STALE_ATTEMPT:
        raise IdempotencyInProgress(f"The request with client_order_id {key!r} is still being processed.")
    if existing.attempt == Attempt.IN_FLIGHT and existing.broker_client_id:
        # A worker died after (perhaps) sending the order: never send it again, find out instead.
        mark_placed(existing)
        return _Claim(existing, replay=True)
    # Nothing was placed under this key (refused, or 502): a new attempt, claimed atomically.
    before = Q(attempt=existing.attempt, attempt_started_at=existing.attempt_started_at)
    existing.attempt, existing.attempt_started_at, existing.status = Attempt.IN_FLIGHT, now, OrderStatus.PENDING
    existing.broker_client_id, existing.broker_order_id = "", None
    save_order_state(existing, fields=["attempt", "attempt_started_at", "broker_client_id", "broker_order_id",
                                       "status"], where=before)
    if not existing.written:
        raise IdempotencyInProgress(f"The request with client_order_id {key!r} is still being processed.")
    existing.refresh_from_db()
    return _Claim(existing, replay=False)


# --- Placement ----------------------------------------------------------------------------------

@dataclass
class Checked:
    """What gates 1 to 4 established: the connection, its adapter and the order in broker form."""

    connection: BrokerAccount
    adapter: BrokerAdapter
    request: OrderRequest


@dataclass
class Check:
    """One gate or risk rule of a placement, with its numbers; `error` is its refusal."""

    name: str
    ok: bool
    error: DomainError | None = None
    numbers: dict = field(default_factory=dict)


@dataclass
class Evaluation:
    checks: list[Check]
    checked: Checked | None = None  # None when a gate before gate 4 refused

    @property
    def error(self) -> DomainError | None:
        """The refusal a placement gets: the first failing check's."""
        return next((c.error for c in self.checks if not c.ok), None)


def evaluate_placement(*, user, order: Order, live: bool, meta: RequestMeta, what_if: bool = False) -> Evaluation:
    """Gates 1 to 4, top to bottom, each as a Check. Sends nothing. The one implementation of them.

    A placement (what_if=False) stops at the first refusal and counts the request at gate 2. A
    what-if counts nothing (gate 2 only reads the counters) and goes on past a refusal wherever it
    can, so every gate and rule shows its numbers: gates 1 and 2 do not depend on each other, every
    risk rule runs; only without a connection (gate 3) is there nothing more to check. It notes on
    `order` which connection the order routes to, so a refusal's audit row names it.
    """
    checks: list[Check] = []
    try:  # gate 1
        check_flags(user=user, live=live, http_request=meta.http_request)
        checks.append(Check("feature_flag", True, numbers={"live": live}))
    except DomainError as err:
        checks.append(Check("feature_flag", False, err, {"live": live}))
        if not what_if:
            return Evaluation(checks)
    try:  # gate 2
        numbers = check_rate(user=user, live=live, http_request=meta.http_request, count=not what_if)
        checks.append(Check("rate_limit", True, numbers=numbers))
    except DomainError as err:
        checks.append(Check("rate_limit", False, err))
        if not what_if:
            return Evaluation(checks)
    # Gates 3 and 4 judge rows read in one statement (the connection, the RiskProfile, the covering
    # kill switches), all at this `now`, which the rules then use too.
    now = timezone.now()
    try:  # gate 3
        rows = read_for_placement(user_id=user.pk, asset_class=order.asset_class, live=live, now=now)
        connection = rows.connection
        if connection is None:  # whatever kill switch is set: there is nothing to route to
            raise BotRegistry.not_configured(order.asset_class, live=live)
        order.connection, order.exchange = connection, connection.exchange
        if connection.status == BrokerAccount.Status.INVALID:
            raise BrokerNotConfigured("The broker refused this connection's credentials earlier; "
                                      "delete it and connect again with valid keys.")
    except DomainError as err:
        checks.append(Check("broker_connection", False, err))
        return Evaluation(checks)
    checks.append(Check("broker_connection", True, numbers={"exchange": connection.exchange,
                                                             "environment": connection.environment}))
    try:  # gate 4
        adapter = build_adapter(connection)
        order.currency = adapter.currency
        request = to_broker_request(order)
        results = RiskManager.for_profile(rows.profile, user_id=user.pk).evaluate(
            order=request, adapter=adapter, exchange=connection.exchange, connection_id=connection.pk, now=now,
            stop_at_first_denial=not what_if, kill_switches=rows.kill_switches)
    except DomainError as err:  # not a denial: the broker or the calendar could not answer
        if isinstance(err, CredentialsRefused):
            _mark_invalid(connection)
        checks.append(Check(err.risk_rule or "broker", False, err))
        return Evaluation(checks)
    checks.extend(Check(r.name, r.ok, r.error, dict(r.numbers)) for r in results)
    return Evaluation(checks, Checked(connection, adapter, request))


def check_placement(*, user, order: Order, live: bool, meta: RequestMeta) -> Checked:
    """Gates 1 to 4 of a placement; raises the first refusal."""
    evaluation = evaluate_placement(user=user, order=order, live=live, meta=meta)
    if evaluation.error is not None:
        raise evaluation.error
    return evaluation.checked


def place_order(*, user, fields: dict, meta: RequestMeta) -> Placed:
    fields = dict(fields)
    live = bool(fields.pop("live_mode", False))
    fields["time_in_force"] = fields.get("time_in_force") or default_time_in_force(fields["asset_class"])
    key = fields.get("client_order_id") or uuid.uuid4().hex

    claim = _claim_key(user=user, key=key, fingerprint=_fingerprint(fields), fields=fields, live=live)
    order = claim.order
    if claim.replay:
        return _replay(order, meta)

    # A new one per attempt: only a refused attempt (nothing placed for certain) starts a new one, and
    # Upbit never accepts an identifier twice, even one whose order failed.
    order.broker_client_id = uuid.uuid4().hex
    try:
        checked = check_placement(user=user, order=order, live=live, meta=meta)  # gates 1 to 4
    except DomainError as err:
        _fail(order, err, meta)
        raise

    # The route and the `submitted` row commit together, before the broker is called.
    order_sql.update_row_audited(order, ["connection", "exchange", "currency", "broker_client_id"],
                                 prepare_order_event(user_id=user.pk, event_type=EventType.SUBMITTED, meta=meta,
                                                     **_audit_fields(order)))
    return _send(order, checked.adapter, checked.request, meta)  # gate 5, outside any transaction


def _send(order: Order, adapter: BrokerAdapter, request: OrderRequest, meta: RequestMeta) -> Placed:
    try:
        result = adapter.place_order(request)
    except BrokerOutcomeUnknown as lost:
        logger.warning("placement outcome unknown; looking the order up",
                       extra={"client_order_id": order.client_order_id, "exchange": order.exchange})
        result = _find_or_resend(order, adapter, request)
        if result is None:
            return _keep_pending(order, meta, lost)
    except CredentialsRefused as err:
        _mark_invalid(order.connection)
        _fail(order, err, meta)
        raise
    except DomainError as err:
        _fail(order, err, meta)
        raise
    return _placed(order, result, meta)


def _find_or_resend(order: Order, adapter: BrokerAdapter, request: OrderRequest) -> BrokerOrder | None:
    """The one broker order of an attempt whose outcome is unknown, or None while it stays undecided.

    Found by our client id -> it. Not found, and the broker enforces client ids -> the same request
    again, under the same broker_client_id: accepted means the first never arrived and this is the
    only order; a duplicate refusal makes the adapter look it up (found -> it, else
    DuplicateClientId). Any other outcome of the re-send (lost again, unavailable, refused for
    another reason such as funds, which the first order may be holding) decides nothing. Never a
    new client id here, so never a second order.
    """
    try:
        found = adapter.find_order(request, submitted_at=order.attempt_started_at)
    except DomainError:
        return None  # the lookup itself failed: nothing can be decided now
    if found is not None:
        if found.broker_client_id != request.broker_client_id:
            # Matched by its fields, not found by our client id (KIS has none): no proof at once that
            # it is this attempt's order. It stays pending until a later lookup or reconcile_orders.
            return None
        return found
    if not adapter.client_ids:
        return None  # not shown now proves nothing, and without a client id a re-send could double it
    logger.info("order not shown after a lost answer; re-sending it under the same client id",
                extra={"client_order_id": order.client_order_id, "exchange": order.exchange})
    try:
        return adapter.place_order(request)
    except DomainError:
        return None


def _placed(order: Order, result: BrokerOrder, meta: RequestMeta) -> Placed:
    # Every other column was written by the claim or the submitted step and has not changed since.
    changed = apply_broker_state(order, result)
    first_live = False
    if not order.live:  # a paper order is never a first live order: its state and audit row in one write
        save_order_state_audited(order, prepare_order_event(
            user_id=order.user_id, event_type=EventType.PLACED, meta=meta, broker_reply=_reply(result),
            **_audit_fields(order)), fields=changed, placed=True)
    else:
        with transaction.atomic():
            save_order_state(order, fields=changed, placed=True)
            first_live = _record_placement(order, meta, event_type=EventType.PLACED, broker_reply=_reply(result))
    if first_live:
        transaction.on_commit(lambda: send_first_live_alert(order))
    if result.legs:  # Alpaca shows a bracket's legs at once; the simulator when the entry filled at once
        order.leg_rows = mirror_legs(order, result, meta=meta)
    return Placed(order, 201)


def _record_placement(order: Order, meta: RequestMeta | None, *, event_type: EventType, broker_reply: dict) -> bool:
    """Audit an order the broker holds: placed at once, or a pending one found or placed later.

    A live one may be the user's first live order, marked exactly once (a partial unique index
    settles any race); True when this row is that mark, so the caller alerts the operators.
    """
    if order.live:
        try:
            with transaction.atomic():
                record_order_event(user_id=order.user_id, event_type=event_type, meta=meta, first_live_order=True,
                                   broker_reply=broker_reply, **_audit_fields(order))
            return True
        except IntegrityError:
            pass
    record_order_event(user_id=order.user_id, event_type=event_type, meta=meta, broker_reply=broker_reply,
                       **_audit_fields(order))
    return False


def _keep_pending(order: Order, meta: RequestMeta, cause: Exception) -> Placed:
    order.status = OrderStatus.PENDING
    order.submitted_at = order.updated_at = order.attempt_started_at
    with transaction.atomic():
        save_order_state(order, placed=True)
        record_order_event(user_id=order.user_id, event_type=EventType.PENDING, meta=meta,
                           error_detail=str(cause), **_audit_fields(order))
    return Placed(order, 202)


def _fail(order: Order, err: DomainError, meta: RequestMeta) -> None:
    order.attempt, order.status = Attempt.FAILED, OrderStatus.REJECTED
    with transaction.atomic():
        save_order_state(order, fields=["attempt", "status", "connection", "exchange", "currency",
                                        "broker_client_id"])
        record_order_event(user_id=order.user_id, event_type=EventType.REJECTED, meta=meta, error=err,
                           **_audit_fields(order))


def _mark_invalid(connection: BrokerAccount | None) -> None:
    if connection is not None:
        BrokerAccount.objects.filter(pk=connection.pk).update(status=BrokerAccount.Status.INVALID)


def _reply(result: BrokerOrder) -> dict:
    return {"broker_order_id": result.broker_order_id, "status": str(result.status),
            "filled_qty": str(result.filled_qty),
            "avg_fill_price": str(result.avg_fill_price) if result.avg_fill_price is not None else None}


def _replay(order: Order, meta: RequestMeta) -> Placed:
    if order.status == OrderStatus.PENDING and not order.broker_order_id:
        if _retry_pending(order, meta):
            return Placed(order, 201)  # the re-send placed it: this request created the one order
    return Placed(order, 200, {"Idempotent-Replayed": "true"})


# --- Pending orders -----------------------------------------------------------------------------

def _retry_pending(order: Order, meta: RequestMeta) -> bool:
    """A retry with the same key of a pending order: look it up once more and, for a broker with
    client ids, re-send it under the same client id. True when the re-send resolved it."""
    if order.connection_id is None:
        return False
    try:
        adapter = build_adapter(order.connection)
        request = to_broker_request(order)
        found = adapter.find_order(request, submitted_at=order.attempt_started_at)
    except DomainError:
        return False
    if found is not None:
        _resolve(order, found, meta)
        return False  # it was there already: a replay
    if not adapter.client_ids:
        return False
    try:
        # Live trading switched off since the first send: no new order goes out, not even this re-send.
        check_flags(user=order.user, live=order.live, http_request=meta.http_request)
    except DomainError:
        return False
    if KillSwitch.objects.covering(user_id=order.user_id, asset_class=order.asset_class).exists():
        return False  # a kill switch set since: the re-send could be what places it; it stays pending
    # The settling time (reconcile_orders) counts from the last send: note this one first, and only
    # while the order is still pending (reconcile may have settled it since the lookup).
    sent_at = timezone.now()
    if not Order.objects.filter(pk=order.pk, status=OrderStatus.PENDING, broker_order_id=None).update(
            attempt_started_at=sent_at):
        order.refresh_from_db()
        return False
    order.attempt_started_at = sent_at
    try:
        placed = adapter.place_order(request)  # the same broker_client_id: never a second order
    except DomainError:
        return False
    return _resolve(order, placed, meta, resent=True)


def _resolve(order: Order, found: BrokerOrder | None, meta: RequestMeta | None, *, resent: bool = False) -> bool:
    """Record what settled a pending order (the broker's order, or None: absent), once, audited.

    Absent only when the order was not sent again after the lookup that settled it (a retry's
    re-send moves attempt_started_at first). False when something else settled it first (another
    request, another reconcile process), or a re-send since makes "absent" premature.
    """
    with transaction.atomic():
        lock_event_stream(order.user_id)  # before the order row, as every state write does (equity.events)
        locked = Order.objects.select_for_update().get(pk=order.pk)
        if (locked.status != OrderStatus.PENDING or locked.broker_order_id
                or (found is None and locked.attempt_started_at != order.attempt_started_at)):
            order.refresh_from_db()
            return False
        first_live = False
        if found is None:
            locked.status = OrderStatus.REJECTED
            locked.updated_at = timezone.now()
            save_order_state(locked)
            record_order_event(user_id=locked.user_id, event_type=EventType.RESOLVED, meta=meta,
                               broker_reply={"found": False}, **_audit_fields(locked))
        else:
            apply_broker_state(locked, found)
            save_order_state(locked)
            first_live = _record_placement(locked, meta, event_type=EventType.RESOLVED,
                                           broker_reply={**_reply(found), "resent": True} if resent else _reply(found))
        if first_live:
            transaction.on_commit(lambda: send_first_live_alert(locked))
    order.refresh_from_db()
    return True


def resolve_pending(order: Order, *, meta: RequestMeta | None = None, adapter: BrokerAdapter | None = None,
                    give_up_absent: bool = True) -> bool:
    """One more lookup of an order whose placement outcome is unknown (never a re-send). True when resolved.

    Found -> its state. Not found -> it stays pending, unless give_up_absent and the adapter says its
    records have settled (absence_settled, counted from the last send): then it is absent (rejected).
    """
    if order.connection_id is None:
        return False
    try:
        adapter = adapter or build_adapter(order.connection)
        found = adapter.find_order(to_broker_request(order), submitted_at=order.attempt_started_at)
    except DomainError:
        return False
    if found is None:
        if not give_up_absent or not adapter.absence_settled(submitted_at=order.attempt_started_at,
                                                             now=timezone.now()):
            return False
    _resolve(order, found, meta)
    order.refresh_from_db()
    if found is not None and found.legs:
        mirror_legs(order, found, meta=meta)
    return order.status != OrderStatus.PENDING or bool(order.broker_order_id)


def mark_placed(order: Order) -> None:
    """An attempt whose worker died after (perhaps) sending it: placed, outcome unknown (pending)."""
    if order.attempt == Attempt.IN_FLIGHT:
        save_order_state(order, fields=[], placed=True)
    order.refresh_from_db()


# --- Bracket legs -------------------------------------------------------------------------------
#
# A bracket's take-profit and stop-loss are orders of their own at the broker (BrokerOrder.legs of
# the parent). Each gets an Order row of its own, linked to its parent, the first time a read of the
# parent shows it: so it is listed, read and canceled like any order, and ownership comes from the
# audit trail as for any order (its `leg_opened` event names it, under the parent's user).

def leg_role(leg: BrokerOrder) -> LegRole:
    """take_profit is the limit leg, stop_loss the stop or stop-limit leg (Alpaca's legs, the simulator's)."""
    return LegRole.TAKE_PROFIT if leg.order_type == OrderType.LIMIT else LegRole.STOP_LOSS


def leg_order_ids(parent_key: str, role: str, broker_order_id: str) -> list[str]:
    """The order_id a leg may take, in order of preference: the parent's plus `:tp` / `:sl`, then (when
    that is taken: by a key of the user's own, or by an earlier leg of this role that the broker
    replaced) one made unique by a digest of the leg's broker id. Each is a valid client_order_id:
    at most 64 of the characters a key may hold."""
    suffix = f":{role}"
    room = 64 - len(suffix)

    def digest(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    plain = parent_key if len(parent_key) <= room else f"{parent_key[:room - 9]}.{digest(parent_key)}"
    return [f"{plain}{suffix}", f"{parent_key[:room - 9]}.{digest(broker_order_id)}{suffix}"]


def _leg_end_event(status: str) -> EventType | None:
    if status == OrderStatus.FILLED:
        return EventType.LEG_FILLED
    return EventType.LEG_ENDED if status in FINAL_STATUSES else None


def _leg_row(parent: Order, leg: BrokerOrder, order_id: str) -> Order:
    stop_limit = leg.order_type == OrderType.STOP and leg.stop_limit_price is not None
    return Order(
        user_id=parent.user_id, client_order_id=order_id, request_fingerprint="", attempt=Attempt.DONE,
        # The parent's: a listing over a leg's time window must reach back to its parent, in which the
        # broker nests it.
        attempt_started_at=parent.attempt_started_at,
        connection_id=parent.connection_id, asset_class=parent.asset_class, exchange=parent.exchange,
        environment=parent.environment, currency=parent.currency, symbol=parent.symbol, side=leg.side,
        order_type=OrderType.STOP_LIMIT if stop_limit else leg.order_type,
        time_in_force=leg.time_in_force or parent.time_in_force, qty=leg.qty,
        limit_price=leg.stop_limit_price if stop_limit else leg.limit_price, stop_price=leg.stop_price,
        report_uuid=parent.report_uuid, broker_client_id=leg.broker_client_id or "",
        broker_order_id=leg.broker_order_id, status=leg.status, filled_qty=leg.filled_qty,
        avg_fill_price=leg.avg_fill_price, submitted_at=leg.submitted_at, updated_at=leg.updated_at,
        parent=parent, leg=leg_role(leg))


def _open_leg(parent: Order, leg: BrokerOrder, meta: RequestMeta | None) -> Order | None:
    """The row of a leg seen for the first time, audited `leg_opened` (and its end, if it has ended)."""
    for order_id in leg_order_ids(parent.client_order_id, leg_role(leg), leg.broker_order_id):
        row = _leg_row(parent, leg, order_id)
        try:
            with transaction.atomic():
                lock_event_stream(row.user_id)  # before the row, as every state write does (equity.events)
                row.save(force_insert=True)
                record_new_order(row)  # a leg's first state is an event of the user's feed
                record_order_event(user_id=row.user_id, event_type=EventType.LEG_OPENED, meta=meta,
                                   broker_reply=_reply(leg), **_audit_fields(row))
                ended = _leg_end_event(row.status)
                if ended is not None:
                    record_order_event(user_id=row.user_id, event_type=ended, meta=meta,
                                       broker_reply=_reply(leg), **_audit_fields(row))
            return row
        except IntegrityError:
            mirrored = Order.objects.filter(parent=parent, broker_order_id=leg.broker_order_id).first()
            if mirrored is not None:  # a concurrent read mirrored it first
                update_leg(mirrored, leg, meta)
                return mirrored
    logger.error("bracket leg has no free order_id; not mirrored",
                 extra={"client_order_id": parent.client_order_id, "broker_order_id": leg.broker_order_id})
    return None


def update_leg(row: Order, leg: BrokerOrder, meta: RequestMeta | None = None, *, audited: bool = False) -> bool:
    """Copy the broker's state of a leg onto its row; a leg that ends is audited exactly once, by the
    read whose conditional update moves it (concurrent reads see the same change: one of them wins).
    audited: the change is the user's own cancel, audited by cancel_order. True when the row changed."""
    before = row.status
    changed = apply_broker_state(row, leg)
    if not changed:
        return False
    with transaction.atomic():
        # The emit point's guarded write: the read that moves the state wins, and emits its event.
        won = save_order_state(row, fields=changed) is not None
        ended = _leg_end_event(row.status) if before not in FINAL_STATUSES else None
        if won and ended is not None and not audited:
            record_order_event(user_id=row.user_id, event_type=ended, meta=meta, broker_reply=_reply(leg),
                               **_audit_fields(row))
    if not won:
        row.refresh_from_db()
    return True


def mirror_legs(parent: Order, broker: BrokerOrder, *, rows: list[Order] | None = None,
                meta: RequestMeta | None = None, canceled_by_user: frozenset[str] = frozenset()) -> list[Order]:
    """Bring the leg rows of a bracket order up to the broker's legs of it; the parent's leg rows, oldest
    first. rows: the parent's leg rows when the caller has them read (else one query)."""
    rows = list(parent.legs.order_by("id")) if rows is None else list(rows)
    by_broker_id = {row.broker_order_id: row for row in rows}
    for leg in broker.legs:
        row = by_broker_id.get(leg.broker_order_id)
        if row is not None:
            update_leg(row, leg, meta, audited=leg.broker_order_id in canceled_by_user)
        elif (opened := _open_leg(parent, leg, meta)) is not None:
            rows.append(opened)
            by_broker_id[leg.broker_order_id] = opened
    return sorted(rows, key=lambda row: row.pk)


def sync_bracket(parent: Order, adapter: BrokerAdapter, *, meta: RequestMeta | None = None,
                 canceled_by_user: frozenset[str] = frozenset()) -> list[Order]:
    """Read a bracket order at its broker: its own state and its legs' onto their rows; the leg rows."""
    fresh = adapter.get_order(parent.broker_order_id, symbol=parent.symbol)
    changed = apply_broker_state(parent, fresh)
    if changed:
        save_order_state(parent, fields=changed)
    parent.leg_rows = mirror_legs(parent, fresh, meta=meta, canceled_by_user=canceled_by_user)
    return parent.leg_rows


def _cancel_at_broker(*, user, order: Order, adapter: BrokerAdapter, meta: RequestMeta) -> None:
    """One cancel call; a refusal is audited (cancel_rejected) and raised."""
    try:
        adapter.cancel_order(order.broker_order_id, symbol=order.symbol)
    except DomainError as err:
        if isinstance(err, CredentialsRefused):
            _mark_invalid(order.connection)
        record_order_event(user_id=user.pk, event_type=EventType.CANCEL_REJECTED, meta=meta, error=err,
                           **_audit_fields(order))
        raise


def _cancel_bracket(*, user, order: Order, adapter: BrokerAdapter, meta: RequestMeta) -> None:
    """DELETE of a bracket order or of one of its legs. A leg: that leg only. The parent: the parent
    while it is open (its broker drops the legs that wait on it), then every leg still open. Each cancel
    is audited (`canceled`, or `cancel_rejected`); the bracket is read back after its last cancel. A
    bracket with nothing open left gets the broker's own refusal, as any final order does."""
    parent = order.parent if order.is_leg else order
    canceled: list[Order] = []
    first_error: DomainError | None = None

    def read_back() -> list[Order] | None:
        try:
            return sync_bracket(parent, adapter, meta=meta,
                                canceled_by_user=frozenset(row.broker_order_id for row in canceled))
        except DomainError:
            return None  # the cancels went through; the next read refreshes the state

    if order.is_leg:
        _cancel_at_broker(user=user, order=order, adapter=adapter, meta=meta)
        canceled.append(order)
        legs = read_back()
    else:
        try:
            legs = sync_bracket(parent, adapter, meta=meta)  # its state and its legs decide what is open
        except DomainError as err:
            if isinstance(err, CredentialsRefused):
                _mark_invalid(parent.connection)
            record_order_event(user_id=user.pk, event_type=EventType.CANCEL_REJECTED, meta=meta, error=err,
                               **_audit_fields(parent))
            raise
        if not OrderStatus(parent.status).is_final:
            _cancel_at_broker(user=user, order=parent, adapter=adapter, meta=meta)
            canceled.append(parent)
            legs = read_back()
        still_open = [leg for leg in legs or [] if not OrderStatus(leg.status).is_final]
        for leg in still_open:
            try:
                _cancel_at_broker(user=user, order=leg, adapter=adapter, meta=meta)
                canceled.append(leg)
            except DomainError as err:  # the other legs are still canceled; the first refusal is the answer
                first_error = first_error or err
        if not canceled and first_error is None:
            _cancel_at_broker(user=user, order=parent, adapter=adapter, meta=meta)  # raises the refusal
            canceled.append(parent)  # a broker that cancels a final order anyway
        if still_open:
            legs = read_back()
    rows = {row.pk: row for row in [parent, *(legs or [])]}
    with transaction.atomic():
        for target in canceled:
            row = rows.get(target.pk, target)
            if legs is None:  # not read back: the broker accepted the cancel
                row.status, row.updated_at = OrderStatus.CANCELED, timezone.now()
                save_order_state(row, fields=["status", "updated_at"])
            record_order_event(user_id=user.pk, event_type=EventType.CANCELED, meta=meta, **_audit_fields(row))
    if first_error is not None:
        raise first_error


# --- Cancel -------------------------------------------------------------------------------------

def cancel_order(*, user, order: Order, adapter: BrokerAdapter, meta: RequestMeta) -> None:
    if order.broker_order_id and (order.is_leg or order.bracket):
        _cancel_bracket(user=user, order=order, adapter=adapter, meta=meta)
        return
    if not order.broker_order_id:
        resolve_pending(order, meta=meta, adapter=adapter)
        if not order.broker_order_id:
            err = BrokerUnavailable("The order's outcome at the broker is still unknown; it cannot be canceled "
                                    "yet. Retry shortly.")
            record_order_event(user_id=user.pk, event_type=EventType.CANCEL_REJECTED, meta=meta, error=err,
                               **_audit_fields(order))
            raise err
    try:
        adapter.cancel_order(order.broker_order_id, symbol=order.symbol)
    except DomainError as err:
        if isinstance(err, CredentialsRefused):
            _mark_invalid(order.connection)
        record_order_event(user_id=user.pk, event_type=EventType.CANCEL_REJECTED, meta=meta, error=err,
                           **_audit_fields(order))
        raise
    try:
        fresh = adapter.get_order(order.broker_order_id, symbol=order.symbol)
    except DomainError:
        fresh = None  # the cancel went through; the next read refreshes the state
    with transaction.atomic():
        if fresh is not None:
            apply_broker_state(order, fresh)
        else:
            order.status, order.updated_at = OrderStatus.CANCELED, timezone.now()
        save_order_state(order)
        record_order_event(user_id=user.pk, event_type=EventType.CANCELED, meta=meta, **_audit_fields(order))
