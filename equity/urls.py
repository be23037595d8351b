from django.urls import re_path
from brokers.routers import OptionalSlashRouter

from equity.views import OrderViewSet, SnapshotViewSet

router = OptionalSlashRouter()
router.register("orders", OrderViewSet, basename="orders")

urlpatterns = [
    re_path(r"^positions/?$", SnapshotViewSet.as_view({"get": "positions"}), name="positions"),
    re_path(r"^account/?$", SnapshotViewSet.as_view({"get": "account"}), name="account"),
    *router.urls,
]
