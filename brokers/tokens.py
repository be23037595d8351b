"""The JWT token routes (simplejwt), in the apps' envelope; a host includes `brokers.token_urls` or not.

The login body is the user model's USERNAME_FIELD (`username`, or `email` for an e-mail login)
and `password`. Request and response have components of their own, so that a generated client
asks for exactly those two fields at login, not for the `access`/`refresh` it gets back.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer, extend_schema_view
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework_simplejwt import views as jwt_views

from brokers.api import AppViewPolicy
from brokers.authentication import LoginSerializer, RefreshSerializer
from brokers.reference import describe_status
from brokers.serializers import ErrorResponse


@extend_schema_serializer(component_name="TokenObtainRequest")
class TokenObtainRequest(serializers.Serializer):
    """The login: the user model's USERNAME_FIELD and the password."""

    def get_fields(self):
        return {get_user_model().USERNAME_FIELD: serializers.CharField(),
                "password": serializers.CharField(style={"input_type": "password"})}


@extend_schema_serializer(component_name="TokenPair")
class TokenPair(serializers.Serializer):
    access = serializers.CharField(help_text="Bearer token for the API.")
    refresh = serializers.CharField(help_text="Exchanged for a new access token at the refresh route.")


@extend_schema_serializer(component_name="TokenRefreshRequest")
class TokenRefreshRequest(serializers.Serializer):
    refresh = serializers.CharField()


@extend_schema_serializer(component_name="AccessToken")
class AccessTokenResponse(serializers.Serializer):
    access = serializers.CharField(help_text="Bearer token for the API.")
    refresh = serializers.CharField(required=False, help_text="Only when refresh tokens rotate.")


_TOKEN_ERRORS = {s: OpenApiResponse(ErrorResponse, description=describe_status(s)) for s in (400, 401, 413, 415, 503)}
_LOGIN_THROTTLED = {429: OpenApiResponse(ErrorResponse, description="`RATE_LIMIT_EXCEEDED`: too many failed logins "
                                                                    "(header `Retry-After`).")}


class _PublicTokenRoute(AppViewPolicy):
    """The apps' envelope and renderers, but open to anyone and with no authentication: a stale or
    forged bearer token sent to the login route is ignored rather than turned into a 401."""

    permission_classes = [AllowAny]

    def get_authenticators(self):
        return []


@extend_schema_view(post=extend_schema(operation_id="obtain_token", auth=[], request=TokenObtainRequest,
                                       responses={200: TokenPair, **_TOKEN_ERRORS, **_LOGIN_THROTTLED}))
class TokenObtainView(_PublicTokenRoute, jwt_views.TokenObtainPairView):
    serializer_class = LoginSerializer  # failed logins throttled before hashing; tokens bound to the password


@extend_schema_view(post=extend_schema(operation_id="refresh_token", auth=[], request=TokenRefreshRequest,
                                       responses={200: AccessTokenResponse, **_TOKEN_ERRORS}))
class TokenRefreshView(_PublicTokenRoute, jwt_views.TokenRefreshView):
    serializer_class = RefreshSerializer  # a deleted user, a changed password, a log-out everywhere: 401
