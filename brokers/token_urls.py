"""JWT token routes, separate from the order routes: `path("<prefix>/auth/", include("brokers.token_urls"))`."""

from django.urls import re_path

from brokers.tokens import TokenObtainView, TokenRefreshView

urlpatterns = [
    re_path(r"^token/?$", TokenObtainView.as_view(), name="token_obtain_pair"),
    re_path(r"^token/refresh/?$", TokenRefreshView.as_view(), name="token_refresh"),
]
