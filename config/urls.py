from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework_simplejwt import views as jwt_views
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer

from brokers.reference import describe_status
from config.views import home
from equity.serializers import ErrorResponse

_TOKEN_ERRORS = {s: OpenApiResponse(ErrorResponse, description=describe_status(s)) for s in (400, 401, 415, 503)}


@extend_schema_view(post=extend_schema(operation_id="obtain_token", auth=[],
                                       responses={200: TokenObtainPairSerializer, **_TOKEN_ERRORS}))
class TokenObtainView(jwt_views.TokenObtainPairView):
    pass


@extend_schema_view(post=extend_schema(operation_id="refresh_token", auth=[],
                                       responses={200: TokenRefreshSerializer, **_TOKEN_ERRORS}))
class TokenRefreshView(jwt_views.TokenRefreshView):
    pass


def document_paths_without_trailing_slash(endpoints, **kwargs):
    """drf-spectacular preprocessing hook: one operation per path, written as SPEC.md writes it.

    Every route also answers with a trailing slash; the schema lists each path once, without it.
    """
    seen, kept = set(), []
    for path_, path_regex, method, callback in endpoints:
        path_ = path_.rstrip("/") or "/"
        if (path_, method) not in seen:
            seen.add((path_, method))
            kept.append((path_, path_regex, method, callback))
    return kept


# Every documented path answers as written (no trailing slash) and with one; tests/api/test_root_and_paths.py
# checks each path that the README, docs/ and the schema name.
urlpatterns = [
    path("", home, name="home"),
    # The API's root and its base paths lead to the docs, where every route under them is.
    re_path(r"^api(?:/(?:auth|equity|brokers))?/?$", RedirectView.as_view(pattern_name="docs")),
    path("admin/", admin.site.urls),
    path("api/auth/token", TokenObtainView.as_view(), name="token_obtain_pair"),
    path("api/auth/token/", TokenObtainView.as_view()),
    path("api/auth/token/refresh", TokenRefreshView.as_view(), name="token_refresh"),
    path("api/auth/token/refresh/", TokenRefreshView.as_view()),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^api/docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/equity/", include("equity.urls")),
    path("api/brokers/", include("brokers.urls")),
]
