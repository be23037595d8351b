from rest_framework.routers import SimpleRouter

from brokers.views import BrokerAccountViewSet

router = SimpleRouter(trailing_slash="/?")
router.register("accounts", BrokerAccountViewSet, basename="broker-accounts")
urlpatterns = router.urls
