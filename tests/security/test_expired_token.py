"""An expired access token is still 401 NOT_AUTHENTICATED, but says when it expired and where to refresh it.

Only a token that we signed is told it expired: a forged, tampered or garbled token gets the same
answer as before, so the message tells an attacker nothing.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import jwt
import pytest
import time_machine
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from tests.equity.helpers import assert_error

pytestmark = pytest.mark.django_db

ORDERS = "/api/equity/orders?asset_class=crypto"
GENERIC = "Given token not valid for any token type"


def bearer(token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_an_expired_access_token_names_its_expiry_and_the_refresh_route(user, sim_crypto):
    token = AccessToken.for_user(user)
    expired_at = datetime.fromtimestamp(token["exp"], tz=timezone.utc)
    with time_machine.travel(expired_at + timedelta(minutes=1)):
        resp = bearer(token).get(ORDERS)
    body = assert_error(resp, 401, "NOT_AUTHENTICATED")
    assert body == {"code": "NOT_AUTHENTICATED",
                    "detail": f"The access token expired at {expired_at:%Y-%m-%dT%H:%M:%SZ}; "
                              "get a new one from /api/auth/token/refresh."}
    assert resp["WWW-Authenticate"].startswith("Bearer")


def test_the_same_token_before_its_expiry_is_accepted(user, sim_crypto):
    token = AccessToken.for_user(user)
    with time_machine.travel(datetime.fromtimestamp(token["exp"], tz=timezone.utc) - timedelta(minutes=1)):
        assert bearer(token).get(ORDERS).status_code == 200


def test_following_the_message_works(user, sim_crypto):
    """Refresh as the detail says, and the new access token is accepted."""
    refresh = RefreshToken.for_user(user)
    later = datetime.fromtimestamp(refresh.access_token["exp"], tz=timezone.utc) + timedelta(minutes=5)
    with time_machine.travel(later):
        assert bearer(refresh.access_token).get(ORDERS).status_code == 401
        fresh = APIClient().post("/api/auth/token/refresh", {"refresh": str(refresh)}, format="json")
        assert fresh.status_code == 200
        assert bearer(fresh.json()["access"]).get(ORDERS).status_code == 200


def _expired_claims(user) -> dict:
    token = AccessToken.for_user(user)
    token.set_exp(from_time=datetime.now(timezone.utc) - timedelta(days=1), lifetime=timedelta(minutes=15))
    return dict(token.payload)


def test_an_expired_token_signed_with_another_key_is_not_told_it_expired(user):
    forged = jwt.encode(_expired_claims(user), "not-our-signing-key-" * 3, algorithm="HS256")
    body = assert_error(bearer(forged).get(ORDERS), 401, "NOT_AUTHENTICATED")
    assert body["detail"] == GENERIC


def test_an_expired_unsigned_token_is_not_told_it_expired(user):
    unsigned = f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}." \
               f"{_b64(json.dumps(_expired_claims(user)).encode())}."
    assert assert_error(bearer(unsigned).get(ORDERS), 401, "NOT_AUTHENTICATED")["detail"] == GENERIC


def test_a_genuine_token_whose_exp_was_edited_is_not_told_it_expired(user):
    header, _, signature = str(AccessToken.for_user(user)).split(".")
    edited = f"{header}.{_b64(json.dumps(_expired_claims(user)).encode())}.{signature}"
    assert assert_error(bearer(edited).get(ORDERS), 401, "NOT_AUTHENTICATED")["detail"] == GENERIC


def test_an_expired_refresh_token_used_as_a_bearer_is_not_called_an_access_token(user):
    refresh = RefreshToken.for_user(user)
    refresh.set_exp(from_time=datetime.now(timezone.utc) - timedelta(days=3), lifetime=timedelta(days=1))
    body = assert_error(bearer(refresh).get(ORDERS), 401, "NOT_AUTHENTICATED")
    assert "access token expired" not in body["detail"]


def test_an_expired_token_of_our_key_with_another_algorithm_is_not_told_it_expired(user):
    forged = jwt.encode(_expired_claims(user), settings.SIMPLE_JWT["SIGNING_KEY"], algorithm="HS512")
    assert assert_error(bearer(forged).get(ORDERS), 401, "NOT_AUTHENTICATED")["detail"] == GENERIC
