"""Input serializers parse; output serializers render. Field names are SPEC.md's, exactly."""

from __future__ import annotations

import copy
import re
from decimal import Decimal

from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from brokers.amounts import NOT_AN_AMOUNT, is_amount
from brokers.serializers import ErrorResponse  # noqa: F401 - the envelope, shared by every app's views
from brokers.serializers import NamedChoiceField
from brokers.reference import LIST_FILTERS, ORDER_STATUSES
from brokers.types import AssetClass, OrderType, Side, TimeInForce

STATUS_FILTERS = tuple(name for name, _ in LIST_FILTERS)
# Used with fullmatch: `$` would also accept a trailing newline.
_KEY_RE = re.compile(r"[A-Za-z0-9._:\-]{1,64}")


MAX_AMOUNT = Decimal(10) ** 12  # exclusive
AMOUNT_STEP = Decimal("1e-10")
AMOUNT_LIMITS = f"A JSON number > 0 and < 10^12, in steps of {AMOUNT_STEP:f} (at most 10 decimal places)."


@extend_schema_field({"type": "number", "format": "double", "minimum": 1e-10,
                      "maximum": 10**12, "exclusiveMaximum": True})
class PositiveAmount(serializers.DecimalField):
    """A price or a quantity: a JSON number > 0 and < 10^12, with at most 10 decimal places (so >= 1e-10).

    The bound keeps every product the service computes (notional, risk = qty x price distance) under
    10^24, which a 28-digit Decimal holds to the cent. The "> 0" check runs in the serializer's
    validate(), so that every field's error is named at once.

    Strict about its input: a JSON number, or a string in plain ASCII decimal notation (as Alpaca's
    clients send amounts), `^[0-9]+(\\.[0-9]+)?$` (brokers.amounts). Python's Decimal() would read
    "١" (Arabic-Indic), "１" (full-width), " 1 ", "+1" or "1e3"; none of them is an amount here.
    """

    default_error_messages = {
        "not_an_amount": NOT_AN_AMOUNT,
        "amount_max": f"Must be less than {MAX_AMOUNT} (10^12), the largest price or quantity accepted.",
        "amount_step": f"Must be a multiple of {AMOUNT_STEP:f} (at most 10 decimal places), the smallest step "
                       "accepted.",
        "max_string_length": f"Too long for an amount: less than {MAX_AMOUNT}, in steps of {AMOUNT_STEP:f}.",
    }

    def __init__(self, **kwargs):
        # The schema's description states the limits that the error messages name.
        kwargs["help_text"] = " ".join(filter(None, [kwargs.get("help_text"), AMOUNT_LIMITS]))
        super().__init__(max_digits=22, decimal_places=10, **kwargs)

    def validate_precision(self, value: Decimal) -> Decimal:
        """The limits in the schema's words (maximum, step) rather than DRF's digit counts; trailing zeros
        past the tenth place ("1.500000000000") are no extra precision and pass."""
        if value.copy_abs() >= MAX_AMOUNT:
            self.fail("amount_max")
        if value.as_tuple().exponent < -10 and value != value.quantize(AMOUNT_STEP):
            self.fail("amount_step")
        return value

    def to_internal_value(self, data):
        if not is_amount(data):
            self.fail("not_an_amount")
        return super().to_internal_value(data)


class ClientOrderId(serializers.CharField):
    """The idempotency key exactly as sent: a JSON string of 1 to 64 of [A-Za-z0-9-_.:]. No trimming
    (" a " is not "a") and no coercion (the number 5 is not the key "5")."""

    default_error_messages = {
        "not_a_string": "Must be a JSON string.",
        "not_a_key": "Use 1 to 64 letters, digits or -_.: characters.",
    }

    def __init__(self, **kwargs):
        # The validator is there for the schema's "pattern"; to_internal_value has already decided.
        super().__init__(max_length=64, min_length=1, trim_whitespace=False,
                         validators=[RegexValidator(r"^[A-Za-z0-9._:-]+$")], **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        if not _KEY_RE.fullmatch(data):
            self.fail("not_a_key")
        return data


def _money(**kwargs):
    return PositiveAmount(**kwargs)


def _positive(value: Decimal | None, name: str, errors: dict) -> None:
    if value is not None and value <= 0:
        errors.setdefault(name, []).append("Must be greater than 0.")


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know: a typo such as `limit_prize` must not become a market order."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class StrictSerializerSchema(OpenApiSerializerExtension):
    """The schema says it too: a strict serializer's object admits no other property."""

    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}


@extend_schema_serializer(component_name="BracketSpec")
class BracketSpec(StrictSerializer):
    """Exit orders placed once the entry fills: for a buy, take_profit > entry > stop_loss; mirrored for a sell."""

    take_profit = _money(help_text="Take-profit limit price.")
    stop_loss = _money(help_text="Protective stop price.")
    stop_loss_limit = _money(required=False, allow_null=True, default=None,
                             help_text="Makes the protective stop a stop-limit at this price.")

    def validate(self, attrs):
        errors: dict = {}
        for name in ("take_profit", "stop_loss", "stop_loss_limit"):
            _positive(attrs.get(name), name, errors)
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


@extend_schema_serializer(component_name="PlaceOrderRequest")
class PlaceOrderRequest(StrictSerializer):
    """An order for your own broker account of the asset class; unknown fields are refused."""

    asset_class = NamedChoiceField(choices=[a.value for a in AssetClass], enum_name="AssetClassEnum")
    symbol = serializers.CharField(min_length=1, max_length=32, trim_whitespace=True,
                                   help_text="The broker-native symbol: AAPL, 005930, BTC/USD, KRW-BTC.")
    side = NamedChoiceField(choices=[s.value for s in Side], enum_name="OrderSideEnum")
    qty = _money(help_text="Greater than 0; fractional where the broker allows it.")
    order_type = NamedChoiceField(choices=[t.value for t in OrderType], enum_name="OrderTypeEnum")
    limit_price = _money(required=False, allow_null=True, default=None,
                         help_text="Required for limit and stop_limit; refused for market and stop.")
    stop_price = _money(required=False, allow_null=True, default=None,
                        help_text="Required for stop and stop_limit; refused for market and limit.")
    bracket = BracketSpec(required=False, allow_null=True, default=None)
    client_order_id = ClientOrderId(
        required=False, allow_null=True, default=None,
        help_text="Idempotency key, unique per user (letters, digits, `-_.:`). Default: a UUID4 hex.")
    time_in_force = NamedChoiceField(
        choices=[t.value for t in TimeInForce], enum_name="TimeInForceEnum",
        required=False, allow_null=True, default=None,
        help_text="Default: day for us_equity and kr_equity, gtc for crypto.")
    report_uuid = serializers.UUIDField(required=False, allow_null=True, default=None)
    # No serializer default: with one, the shared schema component would list it as required, and
    # a generated client would demand it. Omitted means false (place_order).
    live_mode = serializers.BooleanField(required=False, help_text="true routes to the live account. Default: false.")

    def validate_symbol(self, value: str) -> str:
        if not value:
            raise serializers.ValidationError("This field may not be blank.")
        return value

    def validate(self, attrs):
        errors: dict = {}
        order_type, side = attrs["order_type"], attrs["side"]
        limit_price, stop_price = attrs.get("limit_price"), attrs.get("stop_price")
        _positive(attrs.get("qty"), "qty", errors)
        _positive(limit_price, "limit_price", errors)
        _positive(stop_price, "stop_price", errors)

        needs_limit = order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        needs_stop = order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
        if needs_limit and limit_price is None:
            errors.setdefault("limit_price", []).append(f"Required for a {order_type} order.")
        if not needs_limit and limit_price is not None:
            errors.setdefault("limit_price", []).append(f"Not allowed for a {order_type} order.")
        if needs_stop and stop_price is None:
            errors.setdefault("stop_price", []).append(f"Required for a {order_type} order.")
        if not needs_stop and stop_price is not None:
            errors.setdefault("stop_price", []).append(f"Not allowed for a {order_type} order.")

        bracket = attrs.get("bracket")
        if bracket and not errors:
            entry = limit_price if limit_price is not None else stop_price
            tp, sl, sll = bracket["take_profit"], bracket["stop_loss"], bracket.get("stop_loss_limit")
            if side == Side.BUY:
                ordered = tp > sl and (entry is None or tp > entry > sl)
                rule = "take_profit > entry > stop_loss for a buy"
                limit_ok = sll is None or sll <= sl
            else:
                ordered = tp < sl and (entry is None or tp < entry < sl)
                rule = "take_profit < entry < stop_loss for a sell"
                limit_ok = sll is None or sll >= sl
            if not ordered:
                errors.setdefault("bracket", []).append(f"Prices must satisfy {rule}.")
            if not limit_ok:
                errors.setdefault("bracket", []).append(
                    "stop_loss_limit must not be on the profit side of stop_loss.")
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class OrderQuery(serializers.Serializer):
    asset_class = NamedChoiceField(choices=[a.value for a in AssetClass], enum_name="AssetClassEnum")
    symbol = serializers.CharField(required=False, max_length=32)
    live_mode = serializers.BooleanField(required=False, default=False)


class OrderListQuery(OrderQuery):
    status = NamedChoiceField(choices=STATUS_FILTERS, required=False, enum_name="OrderStatusFilterEnum",
                              help_text="; ".join(f"`{name}` = {statuses}" for name, statuses in LIST_FILTERS)
                              + ". Omitted: every status.")
    page = serializers.IntegerField(required=False, default=1, min_value=1, max_value=1_000_000)
    size = serializers.IntegerField(required=False, default=20, min_value=1, max_value=100)


class SnapshotQuery(serializers.Serializer):
    asset_class = NamedChoiceField(choices=[a.value for a in AssetClass], enum_name="AssetClassEnum")
    live_mode = serializers.BooleanField(required=False, default=False)


# --- Output -------------------------------------------------------------------------------------

def _number(**kwargs):
    return serializers.DecimalField(max_digits=None, decimal_places=None, coerce_to_string=False, **kwargs)


@extend_schema_field(BracketSpec)  # one component for the bracket, in and out, as the source's types have it
class BracketOut(serializers.Serializer):
    take_profit = _number()
    stop_loss = _number()
    stop_loss_limit = _number(allow_null=True, required=False)


@extend_schema_serializer(component_name="OrderResponse")
class OrderResponse(serializers.Serializer):
    order_id = serializers.CharField(source="client_order_id", help_text="Equals client_order_id.")
    broker_order_id = serializers.CharField(allow_null=True, help_text="Null while the order is pending.")
    client_order_id = serializers.CharField()
    asset_class = serializers.CharField()
    exchange = serializers.CharField()
    symbol = serializers.CharField()
    side = serializers.CharField()
    qty = _number()
    filled_qty = _number()
    avg_fill_price = _number(allow_null=True)
    order_type = serializers.CharField()
    limit_price = _number(allow_null=True)
    stop_price = _number(allow_null=True)
    status = NamedChoiceField(enum_name="OrderStatusEnum", choices=[name for name, _ in ORDER_STATUSES],
                              help_text="; ".join(f"`{name}`: {meaning}" for name, meaning in ORDER_STATUSES) + ".")
    currency = serializers.CharField()
    submitted_at = serializers.DateTimeField(allow_null=True)
    updated_at = serializers.DateTimeField(allow_null=True)
    bracket = BracketOut(allow_null=True)
    metadata = serializers.SerializerMethodField()

    def get_metadata(self, order) -> OrderMetadata:
        meta = {}
        if order.report_uuid:
            meta["report_uuid"] = str(order.report_uuid)
        if order.order_type == OrderType.STOP_LIMIT and order.limit_price is not None:
            meta["stop_limit_price"] = order.limit_price
        if order.is_leg:
            key = getattr(order, "parent_key", None)
            meta["parent_order_id"] = key if key is not None else order.parent.client_order_id
        elif order.bracket:
            rows = getattr(order, "leg_rows", None)
            if rows is None:  # not read by a selector: a placement's answer
                rows = list(order.legs.order_by("id"))
            meta["legs"] = OrderResponse(rows, many=True, context=self.context).data
        return meta

    def to_representation(self, instance):
        data = self._fields_of(instance)
        bracket = data.get("bracket")
        if bracket and bracket.get("stop_loss_limit") is None:
            bracket.pop("stop_loss_limit", None)
        if "stop_limit_price" in data["metadata"]:
            data["metadata"]["stop_limit_price"] = float(data["metadata"]["stop_limit_price"])
        return data

    _plan: list | None = None

    def _fields_of(self, order) -> dict:
        """What Serializer.to_representation returns for an Order, at a fifth of its cost: a page of 20
        orders spent ~1.5 ms in DRF's per-field machinery (a deep copy of the 19 fields per serializer,
        then get_attribute, SkipField handling and the None check for each field of each order).

        Each field's value is converted by that field's own to_representation, as DRF does, with
        the None check DRF makes; only the lookup is plain: every source is an attribute of the
        model (no dotted source, no callable, no dict), which `_make_plan` checks. Pinned to DRF's
        own result for every kind of order by tests/equity/test_order_response.py.
        """
        plan = type(self).__dict__.get("_plan") or type(self)._make_plan()
        data = {}
        for name, source, field in plan:
            if field is None:  # metadata, the method field
                data[name] = self.get_metadata(order)
            else:
                value = getattr(order, source)
                data[name] = None if value is None else field.to_representation(value)
        return data

    @classmethod
    def _make_plan(cls) -> list:
        plan = []
        for name, field in copy.deepcopy(cls._declared_fields).items():
            source = field.source or name
            if isinstance(field, serializers.SerializerMethodField):
                assert name == "metadata", name
                plan.append((name, None, None))
                continue
            assert "." not in source and source != "*" and not field.write_only, (name, source)
            plan.append((name, source, field))
        cls._plan = plan
        return plan


@extend_schema_serializer(component_name="OrderMetadata")
class OrderMetadata(serializers.Serializer):
    """OrderResponse.metadata: the source's `report_uuid` and `stop_limit_price`, and a bracket's legs.

    OrderResponse keeps exactly the source's fields (SPEC.md), so what a bracket adds lives here.
    """

    report_uuid = serializers.UUIDField(required=False, help_text="The report that prompted the order.")
    stop_limit_price = _number(required=False, help_text="A stop_limit order's limit price.")
    legs = OrderResponse(many=True, required=False, help_text=(
        "A bracket order's take-profit (limit) and stop-loss (stop or stop_limit) orders, each an order of its "
        "own that can be read and canceled by its ids; empty until the broker shows them (the simulator: once "
        "the entry fills; Alpaca: at once, accepted until then). When one fills, the broker cancels the other. "
        "Only on a bracket order."))
    parent_order_id = serializers.CharField(required=False, help_text=(
        "Only on a bracket leg: the order_id of the bracket order it belongs to. A leg's own order_id is the "
        "parent's plus `:tp` (take-profit) or `:sl` (stop-loss)."))


@extend_schema_serializer(component_name="OrderListResponse", many=False)  # a page object, not an array
class OrderListResponse(serializers.Serializer):
    items = OrderResponse(many=True)
    total = serializers.IntegerField()
    page = serializers.IntegerField()
    size = serializers.IntegerField()


class PositionOut(serializers.Serializer):
    asset_class = serializers.CharField()
    exchange = serializers.CharField()
    symbol = serializers.CharField()
    qty = _number()
    avg_entry_price = _number()
    current_price = _number()
    unrealized_pnl = _number()
    unrealized_pnl_pct = _number(help_text="A fraction: 0.0154 is 1.54 %.")
    currency = serializers.CharField()
    side = NamedChoiceField(choices=["LONG", "SHORT"], enum_name="PositionSideEnum")
    metadata = serializers.DictField()

    class Meta:
        ref_name = "Position"


@extend_schema_serializer(component_name="PositionListResponse")
class PositionListResponse(serializers.Serializer):
    items = PositionOut(many=True)


@extend_schema_serializer(component_name="AccountResponse")
class AccountResponse(serializers.Serializer):
    asset_class = serializers.CharField()
    broker = serializers.CharField()
    paper = serializers.BooleanField()
    equity = _number()
    buying_power = _number()
    cash = _number()
    currency = serializers.CharField()
    as_of = serializers.DateTimeField()
    metadata = serializers.DictField()


# --- Trader controls ----------------------------------------------------------------------------

@extend_schema_serializer(component_name="CancelFailure")
class CancelFailure(serializers.Serializer):
    order_id = serializers.CharField()
    code = serializers.CharField(help_text="The code a single cancel would have answered, e.g. BROKER_UNAVAILABLE.")
    detail = serializers.CharField()


@extend_schema_serializer(component_name="CancelAllResponse")
class CancelAllResponse(serializers.Serializer):
    canceled = serializers.ListField(child=serializers.CharField(), help_text="order_id of each canceled order.")
    failed = CancelFailure(many=True, help_text="Orders that could not be canceled, each with its reason.")


KILL_SWITCH_MODES = ("halted", "reducing")


@extend_schema_serializer(component_name="KillSwitchRequest")
class KillSwitchRequest(StrictSerializer):
    mode = NamedChoiceField(choices=KILL_SWITCH_MODES, enum_name="KillSwitchModeEnum",
                            help_text="halted: no placement; reducing: only orders that reduce a position.")
    asset_class = NamedChoiceField(choices=[a.value for a in AssetClass], enum_name="AssetClassEnum",
                                   required=False, allow_null=True, default=None,
                                   help_text="null: every asset class.")
    reason = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    until = serializers.DateTimeField(required=False, allow_null=True, default=None,
                                      help_text="The switch lapses then; before it you cannot release it. "
                                                "null: until released.")
    # No serializer default (see PlaceOrderRequest.live_mode): omitted means false.
    cancel_open = serializers.BooleanField(required=False, help_text="Also cancel the open orders it covers. "
                                                                      "Default: false.")


@extend_schema_serializer(component_name="KillSwitch")
class KillSwitchResponse(serializers.Serializer):
    mode = NamedChoiceField(choices=KILL_SWITCH_MODES, enum_name="KillSwitchModeEnum")
    asset_class = serializers.CharField(allow_null=True, help_text="null: every asset class.")
    scope = NamedChoiceField(choices=["user", "global"], enum_name="KillSwitchScopeEnum",
                             help_text="user: yours; global: set by an operator for every user.")
    reason = serializers.CharField(allow_blank=True)
    until = serializers.DateTimeField(allow_null=True)
    set_by = serializers.CharField()
    set_at = serializers.DateTimeField()


@extend_schema_serializer(component_name="KillSwitchSetResponse")
class KillSwitchSetResponse(KillSwitchResponse):
    cancel_all = CancelAllResponse(allow_null=True, help_text="The cancel-all result when cancel_open was true.")


@extend_schema_serializer(component_name="KillSwitchListResponse", many=False)  # an object, not an array
class KillSwitchListResponse(serializers.Serializer):
    items = KillSwitchResponse(many=True, help_text="Every switch in force that covers you, global ones too.")


class KillSwitchQuery(serializers.Serializer):
    asset_class = NamedChoiceField(choices=[a.value for a in AssetClass], required=False, enum_name="AssetClassEnum",
                                   help_text="The switch's asset class; omitted: the all-asset-classes switch.")


CHECK_NAMES = ("feature_flag", "rate_limit", "broker_connection", "kill_switch", "market_hours", "funds",
               "daily_loss", "trade_risk", "broker")


def _opt_number(help_text=""):
    return _number(required=False, allow_null=True, help_text=help_text)


def _opt_text(help_text=""):
    return serializers.CharField(required=False, allow_null=True, help_text=help_text)


def _opt_bool(help_text=""):
    return serializers.BooleanField(required=False, allow_null=True, help_text=help_text)


def _opt_int(help_text=""):
    return serializers.IntegerField(required=False, allow_null=True, help_text=help_text)


@extend_schema_serializer(component_name="OrderCheck")
class OrderCheckEntry(serializers.Serializer):
    """One gate or risk rule; the numbers present are those of its kind."""

    name = NamedChoiceField(choices=CHECK_NAMES, enum_name="OrderCheckNameEnum",
                            help_text="A gate (feature_flag, rate_limit, broker_connection) or a risk rule; broker: "
                                      "the broker could not answer.")
    ok = serializers.BooleanField()
    code = serializers.CharField(allow_null=True, help_text="The code of its refusal; null when ok.")
    detail = serializers.CharField(allow_null=True)
    # feature_flag, rate_limit
    live = _opt_bool()
    limit = _opt_int("rate_limit: placements per window.")
    remaining = _opt_int("rate_limit: placements left in the window after this one.")
    reset_in_seconds = _opt_int("rate_limit: seconds to the window's end.")
    live_daily_limit = _opt_int()
    live_daily_remaining = _opt_int()
    live_daily_reset_in_seconds = _opt_int()
    # broker_connection
    exchange = _opt_text()
    environment = _opt_text()
    # kill_switch
    mode = _opt_text("kill_switch: halted, reducing, or null (none in force).")
    scope = _opt_text("kill_switch: user or global.")
    asset_class = _opt_text()
    reason = _opt_text()
    until = _opt_text("ISO-8601 UTC.")
    set_by = _opt_text()
    # market_hours
    calendar = _opt_text("market_hours: the exchange calendar (XNYS, XKRX), null for crypto.")
    open = _opt_bool("market_hours: open now.")
    closes_at = _opt_text("market_hours: ISO-8601 UTC, when open.")
    next_open = _opt_text("market_hours: ISO-8601 UTC, when closed.")
    # funds
    buying_power = _opt_number()
    notional = _opt_number()
    entry = _opt_number("The entry price used: limit, else stop, else the latest price.")
    currency = _opt_text()
    held_qty = _opt_number()
    qty = _opt_number()
    shorting_allowed = _opt_bool()
    # daily_loss, trade_risk
    reduce_only = _opt_bool("The order only reduces a position (the rule does not apply).")
    baseline = _opt_number("daily_loss: equity at the start of the day.")
    baseline_source = _opt_text()
    equity = _opt_number()
    change_pct = _opt_number("daily_loss: percent change since the start of the day.")
    limit_pct = _opt_number("The rule's limit, in percent.")
    stop_used = _opt_number("trade_risk: the bracket's stop_loss, null without one.")
    unprotected_loss_pct = _opt_number()
    risk = _opt_number()
    risk_pct = _opt_number()
    max_qty = _opt_number("trade_risk: the largest qty that passes funds and trade_risk at this entry and stop, "
                          "rounded down to the broker's step; null: unbounded.")


@extend_schema_serializer(component_name="OrderCheckResponse")
class OrderCheckResponse(serializers.Serializer):
    would_place = serializers.BooleanField()
    code = serializers.CharField(allow_null=True, help_text="The code a placement would get now; null if it would "
                                                            "be placed.")
    detail = serializers.CharField(allow_null=True)
    checks = OrderCheckEntry(many=True, help_text="Every gate and risk rule, in the placement's order.")


# --- Order updates pushed -----------------------------------------------------------------------

EVENT_TYPE_CHOICES = ["order.pending", "order.accepted", "order.partially_filled", "order.filled", "order.canceled",
                      "order.expired", "order.rejected"]


class EventQuery(serializers.Serializer):
    after = serializers.IntegerField(required=False, min_value=0, max_value=2**63 - 1,
                                     help_text="The last event id you have; omitted: from your first event.")
    limit = serializers.IntegerField(required=False, default=100, min_value=1, max_value=500)


@extend_schema_field(OrderResponse)
class _OrderSnapshot(serializers.JSONField):
    """The order as OrderResponse rendered it when the event happened (stored with the event)."""


@extend_schema_serializer(component_name="OrderEvent")
class EventResponse(serializers.Serializer):
    id = serializers.IntegerField(help_text="Increasing; the `webhook-id` of its deliveries.")
    type = NamedChoiceField(choices=EVENT_TYPE_CHOICES, enum_name="OrderEventTypeEnum",
                            help_text="order.<the order's status after the change>.")
    created_at = serializers.DateTimeField()
    data = _OrderSnapshot()


@extend_schema_serializer(component_name="OrderEventListResponse", many=False)
class EventListResponse(serializers.Serializer):
    items = EventResponse(many=True)
    next_after = serializers.IntegerField(allow_null=True,
                                          help_text="The last item's id, to pass as `after`; null: nothing newer yet.")


@extend_schema_serializer(component_name="WebhookCreateRequest")
class WebhookCreateRequest(StrictSerializer):
    url = serializers.URLField(max_length=2000, help_text="https only; it must resolve to public addresses.")
    events = serializers.ListField(child=NamedChoiceField(choices=[*EVENT_TYPE_CHOICES, "*"],
                                                          enum_name="WebhookEventFilterEnum"),
                                   min_length=1, max_length=len(EVENT_TYPE_CHOICES) + 1,
                                   help_text='Event types to deliver, or ["*"] for all.')


@extend_schema_serializer(component_name="Webhook")
class WebhookResponse(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    active = serializers.BooleanField()
    disabled_reason = serializers.CharField(help_text="Why it was disabled; empty while active.")
    disabled_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


@extend_schema_serializer(component_name="WebhookCreated")
class WebhookCreatedResponse(WebhookResponse):
    secret = serializers.CharField(help_text="The signing secret (whsec_...). Shown only in this response.")


@extend_schema_serializer(component_name="WebhookListResponse", many=False)
class WebhookListResponse(serializers.Serializer):
    items = WebhookResponse(many=True)
