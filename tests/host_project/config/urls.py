from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from accounts.views import NewsletterSignupView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/newsletter/", NewsletterSignupView.as_view(), name="newsletter"),  # the host's own endpoint
    # The order apps, under a prefix of the host's choosing.
    path("trading/auth/", include("brokers.token_urls")),
    path("trading/equity/", include("equity.urls")),
    path("trading/brokers/", include("brokers.urls")),
]
