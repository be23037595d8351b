from django.contrib import admin
from django.urls import include, path
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework_simplejwt import views as jwt_views

from brokers.authentication import LoginSerializer, RefreshSerializer
from equity.serializers import ErrorResponse

_TOKEN_ERRORS = {400: OpenApiResponse(ErrorResponse, description="VALIDATION_ERROR"),
                 401: OpenApiResponse(ErrorResponse, description="NOT_AUTHENTICATED: wrong credentials or token"),
                 413: OpenApiResponse(ErrorResponse, description="PAYLOAD_TOO_LARGE"),
                 415: OpenApiResponse(ErrorResponse, description="UNSUPPORTED_MEDIA_TYPE"),
                 503: OpenApiResponse(ErrorResponse, description="SERVICE_UNAVAILABLE")}
_LOGIN_THROTTLED = {429: OpenApiResponse(ErrorResponse, description="RATE_LIMIT_EXCEEDED: too many failed logins")}


@extend_schema_view(post=extend_schema(operation_id="obtain_token", auth=[],
                                       responses={200: LoginSerializer, **_TOKEN_ERRORS, **_LOGIN_THROTTLED}))
class TokenObtainView(jwt_views.TokenObtainPairView):
    serializer_class = LoginSerializer  # failed logins throttled; tokens bound to the password


@extend_schema_view(post=extend_schema(operation_id="refresh_token", auth=[],
                                       responses={200: RefreshSerializer, **_TOKEN_ERRORS}))
class TokenRefreshView(jwt_views.TokenRefreshView):
    serializer_class = RefreshSerializer  # a deleted user, a changed password, a log-out-everywhere: 401


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


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/auth/token", TokenObtainView.as_view(), name="token_obtain_pair"),
    path("api/auth/token/", TokenObtainView.as_view()),
    path("api/auth/token/refresh", TokenRefreshView.as_view(), name="token_refresh"),
    path("api/auth/token/refresh/", TokenRefreshView.as_view()),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/equity/", include("equity.urls")),
    path("api/brokers/", include("brokers.urls")),
]
