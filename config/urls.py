"""The standalone demo site mounts the apps under /api/ (a host chooses its own prefix)."""

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.views import home

# Every documented path answers as written (no trailing slash) and with one; tests/api/test_root_and_paths.py
# checks each path that the README, docs/ and the schema name.
urlpatterns = [
    path("", home, name="home"),
    # The API's root and its base paths lead to the docs, where every route under them is.
    re_path(r"^api(?:/(?:auth|equity|brokers))?/?$", RedirectView.as_view(pattern_name="docs")),
    path("admin/", admin.site.urls),
    path("api/auth/", include("brokers.token_urls")),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^api/docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/equity/", include("equity.urls")),
    path("api/brokers/", include("brokers.urls")),
]
