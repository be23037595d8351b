from django.urls import re_path
from brokers.routers import OptionalSlashRouter

from equity.views import EventViewSet, OrderViewSet, SnapshotViewSet, WebhookViewSet

router = OptionalSlashRouter()
router.register("orders", OrderViewSet, basename="orders")
router.register("webhooks", WebhookViewSet, basename="webhooks")

urlpatterns = [
    re_path(r"^positions/?$", SnapshotViewSet.as_view({"get": "positions"}), name="positions"),
    re_path(r"^account/?$", SnapshotViewSet.as_view({"get": "account"}), name="account"),
    re_path(r"^events/?$", EventViewSet.as_view({"get": "list"}), name="events"),
    *router.urls,
]
