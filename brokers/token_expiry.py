"""An expired access token says so, and where to get a new one; every other bad token stays as it was.

simplejwt answers an expired token like a forged one ("Given token not valid for any token type").
A client that only has to refresh deserves to be told. Used by the apps' bearer authentication
(brokers.authentication.PasswordBoundJWTAuthentication, which stands for simplejwt's class on the
apps' routes). The expiry is only named for a token whose signature verifies (PyJWT checks the
signature before `exp`), so a forged or tampered token learns nothing new.
"""

from __future__ import annotations

from datetime import datetime, timezone

from django.urls import NoReverseMatch, reverse
from rest_framework_simplejwt.exceptions import ExpiredTokenError, InvalidToken, TokenError
from rest_framework_simplejwt.settings import api_settings

# The URL name of the refresh route (brokers/token_urls.py), wherever a host mounts it.
REFRESH_ROUTE_NAME = "token_refresh"


def expired_access_token_expiry(raw_token: bytes | str) -> datetime | None:
    """When a correctly signed access token expired; None for anything else (forged, garbled, a refresh token)."""
    for token_class in api_settings.AUTH_TOKEN_CLASSES:
        try:
            token_class(raw_token)
        except ExpiredTokenError:
            pass  # signed by us, only too old: read its claims below
        except TokenError:
            continue
        else:
            return None  # not expired: refused for another reason (user, claims), which stands
        try:
            claims = token_class(raw_token, verify=False).payload
        except TokenError:
            continue
        if claims.get(api_settings.TOKEN_TYPE_CLAIM) != token_class.token_type:
            continue
        try:
            return datetime.fromtimestamp(int(claims["exp"]), tz=timezone.utc)
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            continue
    return None


def _refresh_route() -> str:
    try:
        return reverse(REFRESH_ROUTE_NAME)
    except NoReverseMatch:
        return "the token refresh route"


def expired_access_token_refusal(raw_token) -> InvalidToken | None:
    """The 401 for a correctly signed access token that only expired: when, and where to refresh it.
    None for any other token, which keeps simplejwt's own answer."""
    expired_at = expired_access_token_expiry(raw_token)
    if expired_at is None:
        return None
    return InvalidToken(f"The access token expired at {expired_at:%Y-%m-%dT%H:%M:%SZ}; "
                        f"get a new one from {_refresh_route()}.")
