from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from brokers.amounts import NOT_AN_AMOUNT, is_amount
from brokers.registry import ADAPTERS, adapter_class, supported
from brokers.types import AssetClass, Environment

_KIS_ACCOUNT_RE = re.compile(r"^\d{8}-\d{2}$")


@extend_schema_serializer(component_name="BrokerConnectionRequest")
class ConnectionCreate(serializers.Serializer):
    asset_class = serializers.ChoiceField(choices=[a.value for a in AssetClass])
    exchange = serializers.ChoiceField(choices=list(ADAPTERS))
    environment = serializers.ChoiceField(choices=[e.value for e in Environment])
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
