from brokers.routers import OptionalSlashRouter

from brokers.views import BrokerAccountViewSet

router = OptionalSlashRouter()
router.register("accounts", BrokerAccountViewSet, basename="broker-accounts")
urlpatterns = router.urls
