"""Trader controls (SPEC.md "Trader controls"): what-if, cancel-all and the kill switch. Writes.

Each reuses the code a placement runs: the what-if is services.evaluate_placement (the gates and
rules of a placement, counting nothing and sending nothing), cancel-all is services.cancel_order
once per open order, and every kill switch change is an audit row through record_order_event.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import EventType
from audit.services import RequestMeta, record_order_event
from brokers.calendars import iso_z
from brokers.errors import DomainError, InvalidRequest, KillSwitchInForce
from brokers.models import BrokerAccount
from brokers.registry import BotRegistry, build_adapter
from brokers.types import OrderStatus
from equity import services
from equity.models import Attempt, Order
from risk.models import KillSwitch, KillSwitchMode

logger = logging.getLogger(__name__)

NOT_FINAL = (OrderStatus.PENDING, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)


# --- What-if ------------------------------------------------------------------------------------

def check_order(*, user, fields: dict, meta: RequestMeta) -> dict:
    """Would this PlaceOrderRequest be placed now, and with what numbers? No order, no audit row,
    no rate-limit count, no broker order: the placement's own gates and rules, run as a what-if."""
    fields = dict(fields)
    live = bool(fields.pop("live_mode", False))
    fields["time_in_force"] = fields.get("time_in_force") or services.default_time_in_force(fields["asset_class"])
    order = services.order_from_fields(user=user, key=fields.get("client_order_id") or "", fields=fields, live=live)
    evaluation = services.evaluate_placement(user=user, order=order, live=live, meta=meta, what_if=True)
    error = evaluation.error
    return {
        "would_place": error is None,
        "code": error.code if error else None,
        "detail": error.detail if error else None,
        "checks": [{"name": c.name, "ok": c.ok, "code": c.error.code if c.error else None,
                    "detail": c.error.detail if c.error else None, **c.numbers} for c in evaluation.checks],
    }


# --- Cancel-all ---------------------------------------------------------------------------------

@dataclass
class CancelAll:
    canceled: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    def extend(self, other: CancelAll) -> None:
        self.canceled.extend(other.canceled)
        self.failed.extend(other.failed)

    def as_dict(self) -> dict:
        return {"canceled": self.canceled, "failed": self.failed}


def cancel_all(*, user, asset_class: str, live: bool, symbol: str | None = None, meta: RequestMeta) -> CancelAll:
    """Cancel every open order of the user placed through this service on one connection.

    One order's failure (the broker down, the order final meanwhile, its outcome still unknown)
    is reported beside the others and never stops them; each cancel is audited by cancel_order.
    """
    connection = BotRegistry.connection_for_user(user.pk, asset_class, live=live)
    return _cancel_open_on(connection, user=user, symbol=symbol, meta=meta)


def _cancel_open_on(connection: BrokerAccount, *, user, symbol: str | None, meta: RequestMeta) -> CancelAll:
    result = CancelAll()
    orders = Order.objects.select_related("connection").filter(user=user, connection=connection,
                                                               attempt=Attempt.DONE, status__in=NOT_FINAL)
    if symbol:
        orders = orders.filter(symbol=symbol)
    orders = list(orders.order_by("attempt_started_at", "id"))
    # A bracket's cancel (cancel_order on its parent) cancels its open legs too: a leg is canceled on
    # its own only when its parent is not open any more.
    open_ids = {o.pk for o in orders}
    orders = [o for o in orders if o.parent_id not in open_ids]
    if not orders:
        return result
    try:
        adapter = build_adapter(connection)
    except DomainError as err:
        result.failed.extend(_failure(o, err.code, err.detail) for o in orders)
        return result
    for order in orders:
        try:
            services.cancel_order(user=user, order=order, adapter=adapter, meta=meta)
        except DomainError as err:
            result.failed.append(_failure(order, err.code, err.detail))
        except Exception:  # a bug in one cancel must not leave the others standing, nor be a 500
            logger.exception("cancel-all: unexpected error canceling an order",
                             extra={"client_order_id": order.client_order_id})
            result.failed.append(_failure(order, "BROKER_UNAVAILABLE",
                                          "The cancel failed unexpectedly; the order may still be open. Retry."))
        else:
            result.canceled.append(order.client_order_id)
    return result


def _failure(order: Order, code: str, detail: str) -> dict:
    return {"order_id": order.client_order_id, "code": code, "detail": detail}


def cancel_open_orders(*, user=None, asset_class: str = "", meta: RequestMeta) -> CancelAll:
    """Cancel-all on every connection a kill switch covers: the user's (None: every user's), of
    the asset class ("" = all), paper and live."""
    connections = BrokerAccount.objects.select_related("user").order_by("user_id", "id")
    if user is not None:
        connections = connections.filter(user=user)
    if asset_class:
        connections = connections.filter(asset_class=asset_class)
    connections = connections.filter(orders__attempt=Attempt.DONE, orders__status__in=NOT_FINAL).distinct()
    result = CancelAll()
    for connection in connections:
        result.extend(_cancel_open_on(connection, user=connection.user, symbol=None, meta=meta))
    return result


# --- Kill switch --------------------------------------------------------------------------------

@dataclass
class SwitchSet:
    switch: KillSwitch
    canceled: CancelAll | None = None


_STRICTNESS = {KillSwitchMode.REDUCING: 1, KillSwitchMode.HALTED: 2}


def switch_state(switch: KillSwitch) -> dict:
    return {"mode": switch.mode, "asset_class": switch.asset_class or None,
            "scope": "global" if switch.user_id is None else "user", "reason": switch.reason,
            "until": iso_z(switch.until) if switch.until else None, "set_by": switch.set_by,
            "set_at": iso_z(switch.set_at)}


def _locked(user, asset_class: str) -> KillSwitch | None:
    rows = KillSwitch.objects.select_for_update()
    rows = rows.filter(user__isnull=True) if user is None else rows.filter(user=user)
    return rows.filter(asset_class=asset_class).first()


def _binding(switch: KillSwitch, now: datetime) -> str | None:
    """Why the switch's user may not release or weaken it now (None: they may)."""
    if switch.until is not None and switch.until <= now:
        return None  # lapsed
    if switch.set_by_operator:
        return f"it was set by an operator ({switch.set_by}); only an operator can release it"
    if switch.until is not None:
        return f"you set it until {iso_z(switch.until)}; it cannot be released before then"
    return None


def set_kill_switch(*, user, mode: str, asset_class: str = "", reason: str = "", until: datetime | None = None,
                    set_by: str, by_operator: bool, cancel_open: bool = False, meta: RequestMeta) -> SwitchSet:
    """Set (or change) the switch of one scope: the user's (None: global) for one or all asset classes.

    A user cannot weaken their own switch before its `until` (halted -> reducing, an earlier or no
    `until`) nor one an operator set; an operator can do anything. Audited; with cancel_open the
    open orders the switch covers are canceled once it is in force.
    """
    now = timezone.now()
    asset_class = asset_class or ""
    if until is not None and until <= now:
        raise InvalidRequest("until must be in the future.", errors={"until": ["Must be in the future."]})
    for attempt in range(2):
        try:
            with transaction.atomic():
                switch = _locked(user, asset_class)
                if switch is not None and not by_operator:
                    why = _binding(switch, now)
                    weaker = (_STRICTNESS[KillSwitchMode(mode)] < _STRICTNESS[KillSwitchMode(switch.mode)]
                              or (switch.until is not None and until is not None and until < switch.until))
                    if why and (weaker or switch.set_by_operator):
                        raise KillSwitchInForce(f"This kill switch cannot be weakened now: {why}.",
                                                  errors={"mode": [f"The switch stays in force: {why}."]})
                switch = switch or KillSwitch(user=user, asset_class=asset_class)
                switch.mode, switch.reason, switch.until = mode, reason or "", until
                switch.set_by, switch.set_by_operator, switch.set_at = set_by, by_operator, now
                switch.save()
                _audit(switch, EventType.KILL_SWITCH_SET, meta)
            break
        except IntegrityError:  # a concurrent first set of this scope won the INSERT: set it over that one
            if attempt:
                raise
    canceled = cancel_open_orders(user=user, asset_class=asset_class, meta=meta) if cancel_open else None
    return SwitchSet(switch, canceled)


def release_kill_switch(*, user, asset_class: str = "", released_by: str, by_operator: bool,
                        meta: RequestMeta) -> bool:
    """Release the switch of one scope; False when there was none. Audited."""
    now = timezone.now()
    with transaction.atomic():
        switch = _locked(user, asset_class or "")
        if switch is None:
            return False
        if not by_operator:
            why = _binding(switch, now)
            if why:
                raise KillSwitchInForce(f"This kill switch cannot be released now: {why}.",
                                          errors={"asset_class": [f"The switch stays in force: {why}."]})
        state = switch_state(switch)
        KillSwitch.objects.filter(pk=switch.pk).delete()
        _audit(switch, EventType.KILL_SWITCH_RELEASED, meta, extra={"released_by": released_by, "was": state})
    return True


def _audit(switch: KillSwitch, event_type: EventType, meta: RequestMeta, extra: dict | None = None) -> None:
    """The switch as the audit row's request body, whoever changed it (API, admin, command)."""
    body = {**switch_state(switch), **(extra or {})}
    if meta.body:
        body["request"] = meta.body
    record_order_event(user_id=switch.user_id, event_type=event_type, meta=dataclasses.replace(meta, body=body),
                       asset_class=switch.asset_class,
                       status="released" if event_type == EventType.KILL_SWITCH_RELEASED else switch.mode,
                       error_detail=switch.reason)
