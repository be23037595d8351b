"""Thin views: parse with a serializer, call one service or selector, render."""

from __future__ import annotations


from django.db.models import Q
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from audit.services import RequestMeta
from brokers.api import AppViewPolicy
from brokers.reference import describe_status
from brokers.types import AssetClass
from brokers.errors import OrderNotFound
from equity import controls, selectors, services, webhooks
from equity.serializers import (AccountResponse, CancelAllResponse, ErrorResponse, EventListResponse, EventQuery,
                                KillSwitchListResponse, KillSwitchQuery, KillSwitchRequest, KillSwitchSetResponse,
                                OrderCheckResponse, OrderListQuery, OrderListResponse, OrderQuery, OrderResponse,
                                PlaceOrderRequest, PositionListResponse, SnapshotQuery, WebhookCreatedResponse,
                                WebhookCreateRequest, WebhookListResponse, WebhookResponse)
from risk.models import KillSwitch


def errors(*statuses: int) -> dict:
    """The error responses of an operation, each described with its codes and their meaning."""
    return {s: OpenApiResponse(ErrorResponse, description=describe_status(s)) for s in statuses}


READ_ERRORS = errors(400, 401, 403, 404, 502, 503)
EXAMPLE_ORDER_ID = "example-order-1"
PLACE_ORDER_EXAMPLES = [
    OpenApiExample("Market buy", request_only=True,
                   value={"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.01,
                          "order_type": "market"}),
    OpenApiExample("Limit buy with a bracket and an idempotency key", request_only=True,
                   value={"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.01,
                          "order_type": "limit", "limit_price": 30000, "time_in_force": "gtc",
                          "bracket": {"take_profit": 36000, "stop_loss": 28000},
                          "client_order_id": EXAMPLE_ORDER_ID}),
]
ORDER_REF = OpenApiParameter("broker_order_id", str, OpenApiParameter.PATH,
                             description="The broker's order id, or the order_id (= client_order_id).",
                             examples=[OpenApiExample("An order_id", value=EXAMPLE_ORDER_ID)])
# The same query parameter as OrderQuery's, with the example that goes with the order_id above.
ORDER_ASSET_CLASS = OpenApiParameter("asset_class", str, OpenApiParameter.QUERY, required=True,
                                     enum=[a.value for a in AssetClass], description="The order's asset class.",
                                     examples=[OpenApiExample("crypto", value="crypto")])


def _parse(serializer_class, data):
    parsed = serializer_class(data=data)
    parsed.is_valid(raise_exception=True)
    return parsed.validated_data


def _order_ref(value: str) -> str:
    """The order id of the path. One that no order can have (it holds a NUL, which no database column
    takes) is simply not found, like any id that is not the caller's."""
    if "\x00" in value:
        raise OrderNotFound()
    return value


class OrderViewSet(AppViewPolicy, viewsets.ViewSet):
    lookup_field = "broker_order_id"
    lookup_value_regex = r"[^/]+"

    @extend_schema(operation_id="place_order", request=PlaceOrderRequest, examples=PLACE_ORDER_EXAMPLES,
                   responses={201: OrderResponse, 200: OpenApiResponse(OrderResponse, description="Idempotent replay"),
                              202: OpenApiResponse(OrderResponse, description="Outcome unknown: status pending"),
                              **errors(400, 401, 403, 409, 413, 415, 422, 429, 502, 503)})
    def create(self, request):
        fields = _parse(PlaceOrderRequest, request.data)
        placed = services.place_order(user=request.user, fields=fields, meta=RequestMeta.of(request))
        return Response(OrderResponse(placed.order).data, status=placed.http_status, headers=placed.headers)

    @extend_schema(operation_id="list_orders", parameters=[OrderListQuery],
                   responses={200: OrderListResponse, **READ_ERRORS})
    def list(self, request):
        q = _parse(OrderListQuery, request.query_params)
        page = selectors.order_list_for_user(user=request.user, asset_class=q["asset_class"], live=q["live_mode"],
                                             status=q.get("status"), page=q["page"], size=q["size"])
        return Response(OrderListResponse(page).data)

    @extend_schema(operation_id="get_order", parameters=[ORDER_REF, OrderQuery, ORDER_ASSET_CLASS],
                   responses={200: OrderResponse, **READ_ERRORS})
    def retrieve(self, request, broker_order_id=None):
        q = _parse(OrderQuery, request.query_params)
        order = selectors.order_get_for_user(user=request.user, order_ref=_order_ref(broker_order_id),
                                             asset_class=q["asset_class"], live=q["live_mode"])
        return Response(OrderResponse(order).data)

    @extend_schema(operation_id="cancel_order", parameters=[ORDER_REF, OrderQuery, ORDER_ASSET_CLASS],
                   responses={204: OpenApiResponse(description="Canceled"),
                              **errors(400, 401, 403, 404, 422, 502, 503)})
    def destroy(self, request, broker_order_id=None):
        q = _parse(OrderQuery, request.query_params)
        order = selectors.owned_order(user=request.user, order_ref=_order_ref(broker_order_id),
                                      asset_class=q["asset_class"], live=q["live_mode"])
        services.cancel_order(user=request.user, order=order, adapter=selectors.adapter_for_order(order),
                              meta=RequestMeta.of(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(operation_id="cancel_all_orders", parameters=[OrderQuery],
                   description="Cancels every open order of yours placed through this service on the connection "
                               "(optionally one symbol). One order's failure never stops the others.",
                   responses={200: CancelAllResponse, **errors(400, 401, 403, 503)})
    def cancel_all(self, request):
        q = _parse(OrderQuery, request.query_params)
        result = controls.cancel_all(user=request.user, asset_class=q["asset_class"], live=q["live_mode"],
                                     symbol=q.get("symbol"), meta=RequestMeta.of(request))
        return Response(CancelAllResponse(result.as_dict()).data)

    @extend_schema(operation_id="check_order", request=PlaceOrderRequest, examples=PLACE_ORDER_EXAMPLES,
                   description="What-if: the gates and risk rules of a placement, with their numbers. Sends no "
                               "order, stores nothing, writes no audit row, is not counted by the rate limit.",
                   responses={200: OrderCheckResponse, **errors(400, 401, 415, 502, 503)})
    def check(self, request):
        fields = _parse(PlaceOrderRequest, request.data)
        return Response(OrderCheckResponse(controls.check_order(user=request.user, fields=fields,
                                                                meta=RequestMeta.of(request))).data)


class OrderCheckViewSet(OrderViewSet):
    """POST /orders/check. GET and DELETE of that path are an order whose order_id is "check"."""

    def http_method_not_allowed(self, request, *args, **kwargs):
        if request.method == "GET":
            return self.retrieve(request, broker_order_id="check")
        if request.method == "DELETE":
            return self.destroy(request, broker_order_id="check")
        return super().http_method_not_allowed(request, *args, **kwargs)


class KillSwitchViewSet(AppViewPolicy, viewsets.ViewSet):
    @extend_schema(operation_id="list_kill_switches", responses={200: KillSwitchListResponse, **errors(401, 503)})
    def list(self, request):
        switches = KillSwitch.objects.active().filter(Q(user=request.user) | Q(user__isnull=True)) \
            .order_by("user_id", "asset_class")
        return Response(KillSwitchListResponse({"items": [controls.switch_state(s) for s in switches]}).data)

    @extend_schema(operation_id="set_kill_switch", request=KillSwitchRequest,
                   responses={200: KillSwitchSetResponse, **errors(400, 401, 403, 415, 422, 503)})
    def put(self, request):
        q = _parse(KillSwitchRequest, request.data)
        done = controls.set_kill_switch(
            user=request.user, mode=q["mode"], asset_class=q.get("asset_class") or "", reason=q.get("reason", ""),
            until=q.get("until"), set_by=_login(request.user), by_operator=False,
            cancel_open=bool(q.get("cancel_open")), meta=RequestMeta.of(request))
        body = {**controls.switch_state(done.switch),
                "cancel_all": done.canceled.as_dict() if done.canceled is not None else None}
        return Response(KillSwitchSetResponse(body).data)

    @extend_schema(operation_id="release_kill_switch", parameters=[KillSwitchQuery],
                   responses={204: OpenApiResponse(description="Released (or there was none)"),
                              **errors(400, 401, 422, 503)})
    def release(self, request):
        q = _parse(KillSwitchQuery, request.query_params)
        controls.release_kill_switch(user=request.user, asset_class=q.get("asset_class") or "",
                                     released_by=_login(request.user), by_operator=False,
                                     meta=RequestMeta.of(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _login(user) -> str:
    return str(getattr(user, user.USERNAME_FIELD))


class SnapshotViewSet(AppViewPolicy, viewsets.ViewSet):
    @extend_schema(operation_id="list_positions", parameters=[SnapshotQuery],
                   responses={200: PositionListResponse, **errors(400, 401, 403, 502, 503)})
    @action(detail=False, methods=["get"])
    def positions(self, request):
        q = _parse(SnapshotQuery, request.query_params)
        items = selectors.positions_for_user(user=request.user, asset_class=q["asset_class"], live=q["live_mode"])
        return Response(PositionListResponse({"items": items}).data)

    @extend_schema(operation_id="get_account", parameters=[SnapshotQuery],
                   responses={200: AccountResponse, **errors(400, 401, 403, 502, 503)})
    @action(detail=False, methods=["get"])
    def account(self, request):
        q = _parse(SnapshotQuery, request.query_params)
        acct = selectors.account_for_user(user=request.user, asset_class=q["asset_class"], live=q["live_mode"])
        return Response(AccountResponse(acct).data)


class EventViewSet(AppViewPolicy, viewsets.ViewSet):
    @extend_schema(operation_id="list_events", parameters=[EventQuery],
                   responses={200: EventListResponse, **errors(400, 401)},
                   description="Your own order events after `after`, oldest first: a client that was offline, or "
                               "whose webhook was down, catches up here and misses nothing.")
    def list(self, request):
        q = _parse(EventQuery, request.query_params)
        page = selectors.events_for_user(user=request.user, after=q.get("after"), limit=q["limit"])
        return Response(EventListResponse(page).data)


class WebhookViewSet(AppViewPolicy, viewsets.ViewSet):
    lookup_value_regex = r"[0-9]{1,18}"

    @extend_schema(operation_id="create_webhook", request=WebhookCreateRequest,
                   responses={201: WebhookCreatedResponse, **errors(400, 401, 415)},
                   description="Deliveries are signed the Standard Webhooks way with the returned secret, shown "
                               "only here.")
    def create(self, request):
        fields = _parse(WebhookCreateRequest, request.data)
        made = webhooks.subscribe(user=request.user, url=fields["url"], events=fields["events"])
        body = WebhookCreatedResponse({**WebhookResponse(made.subscription).data, "secret": made.secret}).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(operation_id="list_webhooks", responses={200: WebhookListResponse, **errors(401)})
    def list(self, request):
        return Response(WebhookListResponse({"items": selectors.webhooks_for_user(user=request.user)}).data)

    @extend_schema(operation_id="delete_webhook", responses={204: OpenApiResponse(description="Deleted"),
                                                            **errors(401, 404)})
    def destroy(self, request, pk=None):
        webhooks.unsubscribe(user=request.user, subscription_id=int(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)
