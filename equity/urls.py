from django.urls import re_path

from brokers.routers import OptionalSlashRouter
from equity.views import (EventViewSet, KillSwitchViewSet, OrderCheckViewSet, OrderViewSet, SnapshotViewSet,
                          WebhookViewSet)

router = OptionalSlashRouter()
router.register("webhooks", WebhookViewSet, basename="webhooks")

# Paths as SPEC.md writes them, with or without a trailing slash. /orders/check comes before the
# order detail path, whose GET and DELETE it still serves for an order_id "check".
urlpatterns = [
    re_path(r"^orders/?$", OrderViewSet.as_view({"get": "list", "post": "create", "delete": "cancel_all"}),
            name="orders-list"),
    re_path(r"^orders/check/?$", OrderCheckViewSet.as_view({"post": "check"}), name="orders-check"),
    re_path(r"^orders/(?P<broker_order_id>[^/]+)/?$",
            OrderViewSet.as_view({"get": "retrieve", "delete": "destroy"}), name="orders-detail"),
    re_path(r"^kill-switch/?$", KillSwitchViewSet.as_view({"get": "list", "put": "put", "delete": "release"}),
            name="kill-switch"),
    re_path(r"^positions/?$", SnapshotViewSet.as_view({"get": "positions"}), name="positions"),
    re_path(r"^account/?$", SnapshotViewSet.as_view({"get": "account"}), name="account"),
    re_path(r"^events/?$", EventViewSet.as_view({"get": "list"}), name="events"),
    *router.urls,
]
