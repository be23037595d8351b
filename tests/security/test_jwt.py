"""Forged, expired, wrong-algorithm and tampered JWTs: 401 NOT_AUTHENTICATED on every API route.

The routes come from the URLconf itself, so a route added later is covered without editing this
file. The four public routes (token, refresh, schema, docs) run no authentication at all: a bad
token there is ignored, never a key to anything.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta

import jwt
import pytest
import time_machine
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.urls import URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from audit.models import BrokerOrderEvent
from brokers.models import BrokerAccount
from equity.models import Order
from tests.factories import BrokerAccountFactory, UserFactory

pytestmark = pytest.mark.django_db

PUBLIC = {"/api/auth/token", "/api/auth/token/refresh", "/api/schema", "/api/docs"}
METHODS = ("get", "post", "put", "patch", "delete")
SAMPLE_IDS = {"pk": "1", "broker_order_id": "11111111-2222-4333-8444-555555555555"}


def _walk(patterns, prefix: str):
    for pattern in patterns:
        regex = prefix + pattern.pattern.regex.pattern.lstrip("^")
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, regex)
        else:
            yield regex, pattern.callback


def _sample_paths(regex: str) -> set[str]:
    """The concrete paths a route regex matches, ids filled in, with and without a trailing slash."""
    filled = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: SAMPLE_IDS.get(m.group(1), "1"), regex)
    filled = filled.replace("\\Z", "").rstrip("$").replace("\\", "")
    return {"/" + filled.replace("/?", ""), "/" + filled.replace("/?", "/")}


def api_routes() -> list[tuple[str, str]]:
    """(method, path) for every method of every route under /api/ in the URLconf."""
    routes = set()
    for regex, callback in _walk(get_resolver().url_patterns, ""):
        actions = getattr(callback, "actions", None)
        view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
        # (DRF adds "head" to a viewset's actions at its first request: a body-less GET, left out.)
        methods = {m for m in METHODS if (m in actions if actions else hasattr(view_class, m))}
        for path in _sample_paths(regex):
            if path.startswith("/api/"):
                routes |= {(method, path) for method in methods}
    return sorted(routes)


def protected_routes():
    return [r for r in api_routes() if r[1].rstrip("/") not in PUBLIC]


def public_routes():
    return [r for r in api_routes() if r[1].rstrip("/") in PUBLIC]


# --- forged tokens ----------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(user, kind=AccessToken) -> dict:
    """The claims of a genuine token of `kind` for `user`, as simplejwt writes them."""
    return jwt.decode(str(kind.for_user(user)), options={"verify_signature": False})


def _unsigned(header: dict, claims: dict) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."


def wrong_key(user, kind):
    return jwt.encode(_claims(user, kind), "not-the-server-secret-" + "x" * 40, algorithm="HS256")


def alg_none(user, kind):
    return _unsigned({"alg": "none", "typ": "JWT"}, _claims(user, kind))


def alg_none_capitalised(user, kind):
    return _unsigned({"alg": "None", "typ": "JWT"}, _claims(user, kind))


def hs512_with_the_real_key(user, kind):
    return jwt.encode(_claims(user, kind), settings.SIMPLE_JWT["SIGNING_KEY"], algorithm="HS512")


def rs256_with_its_own_key(user, kind):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return jwt.encode(_claims(user, kind), pem, algorithm="RS256")


def expired(user, kind):
    token = kind.for_user(user)
    token.set_exp(from_time=timezone.now() - timedelta(days=2), lifetime=timedelta(minutes=15))
    return str(token)


def payload_swapped_to_another_user(user, kind):
    """A genuine token of another account with the victim's claims pasted into its payload."""
    header, _, signature = str(kind.for_user(UserFactory(username="mallory"))).split(".")
    return f"{header}.{_b64(json.dumps(_claims(user, kind)).encode())}.{signature}"


def signature_flipped(user, kind):
    header, payload, signature = str(kind.for_user(user)).split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{header}.{payload}.{flipped}"


def lifetime_extended(user, kind):
    token = kind.for_user(user)
    header, _, signature = str(token).split(".")
    claims = jwt.decode(str(token), options={"verify_signature": False})
    claims["exp"] += 365 * 24 * 3600
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def the_other_token_type(user, kind):
    """A genuine refresh token where an access token belongs, and the other way round."""
    return str((RefreshToken if kind is AccessToken else AccessToken).for_user(user))


def garbage(user, kind):
    return "not.a.jwt"


FORGERIES = [wrong_key, alg_none, alg_none_capitalised, hs512_with_the_real_key, rs256_with_its_own_key, expired,
             payload_swapped_to_another_user, signature_flipped, lifetime_extended, the_other_token_type, garbage]


def assert_401_envelope_without_www_authenticate(resp):
    assert resp.status_code == 401, (resp.status_code, resp.content[:300])
    assert resp["Content-Type"].startswith("application/json"), (resp.status_code, resp.content[:300])
    body = resp.json()
    assert set(body) == {"code", "detail"} and body["code"] == "NOT_AUTHENTICATED", body
    assert isinstance(body["detail"], str) and body["detail"]


def assert_401_envelope(resp):
    assert_401_envelope_without_www_authenticate(resp)
    assert resp["WWW-Authenticate"].startswith("Bearer")


def send(client, method: str, path: str):
    return getattr(client, method)(path, {}, format="json") if method in ("post", "put", "patch") \
        else getattr(client, method)(path)


@pytest.fixture
def victim(user):
    """alice, with a connection: a token that passed as hers would have something to act on."""
    BrokerAccountFactory(user=user, asset_class="crypto")
    return user


# --- the tests ----------------------------------------------------------------------------------------

def test_the_route_list_comes_from_the_urlconf_and_covers_the_spec_routes():
    paths = {p.rstrip("/") for _, p in api_routes()}
    assert {"/api/equity/orders", f"/api/equity/orders/{SAMPLE_IDS['broker_order_id']}", "/api/equity/positions",
            "/api/equity/account", "/api/brokers/accounts", "/api/brokers/accounts/1"} <= paths
    assert PUBLIC <= paths
    assert ("delete", f"/api/equity/orders/{SAMPLE_IDS['broker_order_id']}") in api_routes()


@pytest.mark.parametrize("forge", FORGERIES, ids=lambda f: f.__name__)
def test_a_bad_token_is_401_not_authenticated_on_every_protected_route(victim, forge):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {forge(victim, AccessToken)}")
    for method, path in protected_routes():
        assert_401_envelope(send(client, method, path))
    assert BrokerAccount.objects.filter(user=victim).count() == 1
    assert not Order.objects.exists() and not BrokerOrderEvent.objects.exists()


@pytest.mark.parametrize("method,path", protected_routes())
def test_no_token_at_all_is_401_not_authenticated(db, method, path):
    assert_401_envelope(send(APIClient(), method, path))


def test_the_genuine_token_that_the_forgeries_start_from_is_accepted(victim):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(victim)}")
    assert client.get("/api/brokers/accounts").status_code == 200


def test_an_access_token_is_refused_once_its_15_minutes_are_over(victim):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(victim)}")
    with time_machine.travel(timezone.now() + timedelta(minutes=15, seconds=1)):
        assert_401_envelope(client.get("/api/brokers/accounts"))


def test_a_token_of_a_deactivated_or_deleted_user_is_401(victim, other_user):
    tokens = {u.username: str(AccessToken.for_user(u)) for u in (victim, other_user)}
    victim.is_active = False
    victim.save()
    other_user.delete()
    for token in tokens.values():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        assert_401_envelope(client.get("/api/brokers/accounts"))


@pytest.mark.parametrize("method,path", public_routes())
def test_public_routes_ignore_a_forged_token(victim, method, path):
    anonymous = send(APIClient(), method, path)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {wrong_key(victim, AccessToken)}")
    forged = send(client, method, path)
    assert forged.status_code == anonymous.status_code != 401


@pytest.mark.parametrize("forge", FORGERIES, ids=lambda f: f.__name__)
def test_a_bad_refresh_token_is_401_and_gets_no_access_token(victim, forge):
    resp = APIClient().post("/api/auth/token/refresh", {"refresh": forge(victim, RefreshToken)}, format="json")
    assert_401_envelope_without_www_authenticate(resp)
    assert "access" not in resp.json()


def test_the_genuine_refresh_token_that_the_forgeries_start_from_is_accepted(victim):
    resp = APIClient().post("/api/auth/token/refresh", {"refresh": str(RefreshToken.for_user(victim))}, format="json")
    assert resp.status_code == 200 and resp.json()["access"]


