from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.response import Response

from brokers import services
from brokers.reference import describe_status
from brokers.models import BrokerAccount
from brokers.api import AppViewPolicy
from brokers.serializers import ConnectionCreate, ConnectionList, ConnectionOut, ErrorResponse


def _errors(*statuses):
    return {s: OpenApiResponse(ErrorResponse, description=describe_status(s)) for s in statuses}


class BrokerAccountViewSet(AppViewPolicy, viewsets.ViewSet):
    lookup_value_regex = r"[0-9]+"

    @extend_schema(operation_id="list_broker_accounts", responses={200: ConnectionList, **_errors(401, 503)})
    def list(self, request):
        items = BrokerAccount.objects.filter(user=request.user).order_by("id")
        return Response(ConnectionList({"items": items}).data)

    @extend_schema(operation_id="connect_broker_account", request=ConnectionCreate,
                   examples=[OpenApiExample("The built-in simulator", request_only=True,
                                            value={"asset_class": "kr_equity", "exchange": "sim",
                                                   "environment": "paper", "label": "KRX simulator"})],
                   responses={201: ConnectionOut, **_errors(400, 401, 413, 415, 502, 503)})
    def create(self, request):
        parsed = ConnectionCreate(data=request.data)
        parsed.is_valid(raise_exception=True)
        connection = services.connect_broker(user=request.user, **parsed.validated_data)
        return Response(ConnectionOut(connection).data, status=status.HTTP_201_CREATED)

    @extend_schema(operation_id="delete_broker_account",
                   responses={204: OpenApiResponse(description="Deleted"), **_errors(401, 404, 503)})
    def destroy(self, request, pk=None):
        services.disconnect_broker(user=request.user, connection_id=int(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)
