"""A validly signed token must still name a user who exists (issue 13, item 4).

simplejwt looked the `user_id` claim up as it came: `"1 OR 1=1"`, `[1]` or `"1\\u0000"` in a token
signed with the real key reached the ORM and were a 500 on every route, and the refresh of a
deleted user's token raised User.DoesNotExist (a 500). All of them are 401 NOT_AUTHENTICATED.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from audit.models import BrokerOrderEvent
from equity.models import Order
from tests.security.test_jwt import (assert_401_envelope, assert_401_envelope_without_www_authenticate,
                                     protected_routes, send)

pytestmark = pytest.mark.django_db

MALFORMED_USER_IDS = ["1 OR 1=1", [1], "1\u0000", {"id": 1}, True, 1.5, "", None, "9" * 40, 2**63, -1,
                      "１", "1 ", "0x1"]


def signed_with_the_real_key(kind, user, user_id) -> str:
    token = kind.for_user(user)
    token["user_id"] = user_id
    return str(token)


@pytest.mark.parametrize("user_id", MALFORMED_USER_IDS, ids=repr)
def test_a_signed_access_token_with_a_malformed_user_id_is_401_on_every_route(user, user_id):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {signed_with_the_real_key(AccessToken, user, user_id)}")
    client.raise_request_exception = False
    for method, path in protected_routes():
        assert_401_envelope(send(client, method, path))
    assert not Order.objects.exists() and not BrokerOrderEvent.objects.exists()


@pytest.mark.parametrize("user_id", MALFORMED_USER_IDS, ids=repr)
def test_a_signed_refresh_token_with_a_malformed_user_id_is_401_and_gets_no_access_token(user, user_id):
    client = APIClient()
    client.raise_request_exception = False
    resp = client.post("/api/auth/token/refresh", {"refresh": signed_with_the_real_key(RefreshToken, user, user_id)},
                       format="json")
    assert_401_envelope_without_www_authenticate(resp)
    assert "access" not in resp.json()


def test_a_token_without_a_user_id_claim_is_401(user):
    for kind in (AccessToken, RefreshToken):
        token = kind.for_user(user)
        del token["user_id"]
        client = APIClient()
        if kind is AccessToken:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
            assert_401_envelope(client.get("/api/brokers/accounts"))
        else:
            assert_401_envelope_without_www_authenticate(
                client.post("/api/auth/token/refresh", {"refresh": str(token)}, format="json"))


def test_the_refresh_token_of_a_deleted_user_is_401_not_a_500(user):
    refresh = str(RefreshToken.for_user(user))
    user.delete()
    client = APIClient()
    client.raise_request_exception = False
    resp = client.post("/api/auth/token/refresh", {"refresh": refresh}, format="json")
    assert_401_envelope_without_www_authenticate(resp)
    assert "access" not in resp.json()


def test_the_refresh_token_of_a_deactivated_user_is_401(user):
    refresh = str(RefreshToken.for_user(user))
    user.is_active = False
    user.save()
    resp = APIClient().post("/api/auth/token/refresh", {"refresh": refresh}, format="json")
    assert_401_envelope_without_www_authenticate(resp)


def test_the_user_id_claim_as_simplejwt_writes_it_and_as_an_integer_both_name_the_user(user):
    for user_id in (str(user.pk), user.pk):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {signed_with_the_real_key(AccessToken, user, user_id)}")
        assert client.get("/api/brokers/accounts").status_code == 200


@pytest.mark.parametrize("classes", [None, ["rest_framework_simplejwt.authentication.JWTAuthentication"]],
                         ids=["host's DRF default", "EQUITY_ORDERS"])
def test_simplejwt_s_own_class_named_by_a_host_is_the_checked_one_on_the_apps_routes(user, equity_orders, settings,
                                                                                   classes):
    """A host lists plain `rest_framework_simplejwt.authentication.JWTAuthentication` (the demo site
    does too): on the apps' routes it is brokers.authentication's subclass, so the checks hold."""
    assert "rest_framework_simplejwt.authentication.JWTAuthentication" in \
        settings.REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]
    equity_orders.AUTHENTICATION_CLASSES = classes
    client = APIClient()
    client.raise_request_exception = False
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {signed_with_the_real_key(AccessToken, user, '1 OR 1=1')}")
    assert_401_envelope(client.get("/api/brokers/accounts"))
