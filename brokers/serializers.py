from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from brokers.amounts import NOT_AN_AMOUNT, is_amount
from brokers.reference import codes_by_status
from brokers.registry import ADAPTERS, adapter_class, supported
from brokers.types import AssetClass, Environment

_KIS_ACCOUNT_RE = re.compile(r"^\d{8}-\d{2}$")


class NamedChoiceField(serializers.ChoiceField):
    """A ChoiceField whose OpenAPI enum is a component with a name of its own (`OrderSideEnum`).

    drf-spectacular names an enum after the field, and when two fields of one name differ (an
    order's side buy/sell, a position's LONG/SHORT) after the first serializer that has it
    (`PlaceOrderRequestSideEnum`), unless the host's SPECTACULAR_SETTINGS say otherwise. The name
    is part of the apps' schema, so it is fixed here, whatever the host's settings.
    """

    def __init__(self, *, enum_name: str, **kwargs):
        self.enum_name = enum_name
        super().__init__(**kwargs)


class NamedChoiceFieldSchema(OpenApiSerializerFieldExtension):
    target_class = NamedChoiceField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        component = ResolvedComponent(name=self.target.enum_name, type=ResolvedComponent.SCHEMA,
                                      object=self.target.enum_name,
                                      schema={"type": "string", "enum": [str(c) for c in self.target.choices]})
        auto_schema.registry.register_on_missing(component)
        if not self.target.allow_null:
            return component.ref
        # As drf-spectacular writes a nullable enum: one of the enum or null.
        null = ResolvedComponent(name="NullEnum", type=ResolvedComponent.SCHEMA, object="NullEnum",
                                 schema={"enum": [None]})
        auto_schema.registry.register_on_missing(null)
        return {"oneOf": [component.ref, null.ref]}


@extend_schema_serializer(component_name="BrokerConnectionRequest")
class ConnectionCreate(serializers.Serializer):
    asset_class = NamedChoiceField(choices=[a.value for a in AssetClass], enum_name="AssetClassEnum")
    exchange = NamedChoiceField(choices=list(ADAPTERS), enum_name="ExchangeEnum")
    environment = NamedChoiceField(choices=[e.value for e in Environment], enum_name="EnvironmentEnum")
    label = serializers.CharField(required=False, allow_blank=True, max_length=100, default="")
    credentials = serializers.DictField(
        child=serializers.CharField(max_length=512, allow_blank=False), required=False, default=dict,
        help_text="alpaca {api_key, secret_key}; kis {app_key, app_secret, account_no: '12345678-01'}; "
                  "upbit {access_key, secret_key}; sim {} (optional starting_cash).")

    def validate(self, attrs):
        exchange, asset_class, env = attrs["exchange"], attrs["asset_class"], attrs["environment"]
        if not supported(exchange, asset_class, env):
            raise serializers.ValidationError(
                {"environment": [f"{exchange} has no {env} {asset_class} accounts."]})
        creds = attrs["credentials"]
        required = set(adapter_class(exchange).CREDENTIAL_FIELDS)
        allowed = required | ({"starting_cash"} if exchange == "sim" else set())
        problems = []
        missing = sorted(required - set(creds))
        if missing:
            problems.append(f"Missing for {exchange}: {', '.join(missing)}.")
        unknown = sorted(set(creds) - allowed)
        if unknown:
            problems.append(f"Not used by {exchange}: {', '.join(unknown)}.")
        if exchange == "kis" and "account_no" in creds and not _KIS_ACCOUNT_RE.match(creds["account_no"]):
            problems.append("account_no must look like 12345678-01.")
        if "starting_cash" in creds:
            # As sent, before the credentials' CharField turned a number into a string and trimmed it.
            sent = (self.initial_data.get("credentials") or {}).get("starting_cash")
            try:
                if not is_amount(sent) or Decimal(creds["starting_cash"]) <= 0:
                    raise InvalidOperation
            except (InvalidOperation, ValueError):
                problems.append(f"starting_cash must be a positive number. {NOT_AN_AMOUNT}")
        if problems:
            raise serializers.ValidationError({"credentials": problems})
        return attrs


@extend_schema_serializer(component_name="BrokerConnection")
class ConnectionOut(serializers.Serializer):
    id = serializers.IntegerField()
    asset_class = serializers.CharField()
    exchange = serializers.CharField()
    environment = serializers.CharField()
    label = serializers.CharField()
    status = serializers.CharField()
    key_hint = serializers.CharField(help_text="The last 4 characters of the key id, for recognition.")
    created_at = serializers.DateTimeField()


@extend_schema_serializer(component_name="BrokerConnectionList", many=False)  # {"items": [...]}, not an array
class ConnectionList(serializers.Serializer):
    items = ConnectionOut(many=True)


@extend_schema_serializer(component_name="Error")
class ErrorResponse(serializers.Serializer):
    """Every error: a stable code, a sentence for people, and for validation errors each field's messages."""

    code = serializers.CharField(help_text="By HTTP status (the API's description explains each): "
                                           + codes_by_status() + ".")
    detail = serializers.CharField(help_text="A sentence saying what happened and, where it helps, what to do.")
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False,
                                   help_text="VALIDATION_ERROR only: {field: [messages]}; nested fields as "
                                             "`bracket.stop_loss`.")
