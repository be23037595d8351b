"""Tokens die with the password, and with an operator's "log out everywhere" (issue 13, item 6).

A password change used to leave the old access token working and the old refresh token minting new
ones for a day. Now a change of the password (however it is made), or an operator's log-out
everywhere (admin action or `manage.py log_out_everywhere`), makes every earlier access and refresh
token of that user 401 NOT_AUTHENTICATED on its next use, the access tokens minted from an old
refresh token included; a new login works at once, and nobody else's tokens are touched.
"""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.test import APIClient

from brokers.models import TokenGeneration
from tests.factories import TraderProfileFactory, UserFactory
from tests.security.test_jwt import assert_401_envelope, assert_401_envelope_without_www_authenticate

pytestmark = pytest.mark.django_db

PASSWORD = "pass-1234-word"  # tests.factories.UserFactory's


def log_in(username: str, password: str = PASSWORD) -> dict:
    resp = APIClient().post("/api/auth/token", {"username": username, "password": password}, format="json")
    assert resp.status_code == 200, resp.content
    return resp.json()


def refreshed(refresh: str):
    return APIClient().post("/api/auth/token/refresh", {"refresh": refresh}, format="json")


def read_with(access: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client.get("/api/brokers/accounts")


def earlier_tokens(username: str) -> dict:
    """A login's pair and an access token minted from its refresh token, all working now."""
    pair = log_in(username)
    minted = refreshed(pair["refresh"])
    assert minted.status_code == 200
    tokens = {"access": pair["access"], "minted access": minted.json()["access"], "refresh": pair["refresh"]}
    assert read_with(tokens["access"]).status_code == 200 and read_with(tokens["minted access"]).status_code == 200
    return tokens


def assert_all_ended(tokens: dict) -> None:
    assert_401_envelope(read_with(tokens["access"]))
    assert_401_envelope(read_with(tokens["minted access"]))
    resp = refreshed(tokens["refresh"])
    assert_401_envelope_without_www_authenticate(resp)
    assert "access" not in resp.json()


def assert_all_working(tokens: dict) -> None:
    assert read_with(tokens["access"]).status_code == 200
    assert read_with(tokens["minted access"]).status_code == 200
    assert refreshed(tokens["refresh"]).status_code == 200


@pytest.fixture
def bob_tokens(other_user):
    return earlier_tokens(other_user.username)


def test_after_a_password_change_every_earlier_token_is_401_and_the_new_password_logs_in(user, bob_tokens):
    tokens = earlier_tokens(user.username)
    user.set_password("a-new-pass-5678")
    user.save()
    assert_all_ended(tokens)
    fresh = log_in(user.username, "a-new-pass-5678")
    assert read_with(fresh["access"]).status_code == 200 and refreshed(fresh["refresh"]).status_code == 200
    assert_all_working(bob_tokens)


def test_setting_the_same_password_again_also_ends_the_tokens(user):
    """A new hash (a new salt) is a password change, as an operator resetting it would expect."""
    tokens = earlier_tokens(user.username)
    user.set_password(PASSWORD)
    user.save()
    assert_all_ended(tokens)


def test_a_password_changed_behind_the_orm_s_back_still_ends_the_tokens(user):
    """The check compares with the stored hash on every use: no signal to miss (queryset update, raw SQL)."""
    from django.contrib.auth.hashers import make_password

    tokens = earlier_tokens(user.username)
    type(user).objects.filter(pk=user.pk).update(password=make_password("changed-by-update"))
    assert_all_ended(tokens)


def test_the_log_out_everywhere_command_ends_every_earlier_token_of_that_user_only(user, bob_tokens, capsys):
    tokens = earlier_tokens(user.username)
    call_command("log_out_everywhere", user.username)
    assert "token generation 1" in capsys.readouterr().out
    assert_all_ended(tokens)
    fresh = log_in(user.username)  # the password is unchanged: a new login works at once
    assert read_with(fresh["access"]).status_code == 200 and refreshed(fresh["refresh"]).status_code == 200
    assert_all_working(bob_tokens)


def test_a_second_log_out_everywhere_ends_the_tokens_issued_after_the_first(user):
    call_command("log_out_everywhere", user.username)
    between = earlier_tokens(user.username)
    call_command("log_out_everywhere", user.username)
    assert_all_ended(between)
    assert TokenGeneration.objects.get(user=user).number == 2


def test_the_log_out_everywhere_command_names_an_unknown_login(db):
    with pytest.raises(CommandError, match="No user 'nobody'"):
        call_command("log_out_everywhere", "nobody")


@pytest.fixture
def operator_client(client):
    client.force_login(UserFactory(username="ops", is_staff=True, is_superuser=True))
    return client


def test_the_admin_action_on_users_logs_the_selected_users_out_everywhere(operator_client, user, bob_tokens):
    tokens = earlier_tokens(user.username)
    resp = operator_client.post(reverse("admin:auth_user_changelist"),
                                {"action": "log_out_everywhere", "_selected_action": [user.pk]}, follow=True)
    assert resp.status_code == 200
    assert "Every earlier access and refresh token of 1 user(s) is ended" in resp.content.decode()
    assert_all_ended(tokens)
    assert_all_working(bob_tokens)


def test_the_admin_action_on_trader_profiles_logs_their_users_out_everywhere(operator_client, user, bob_tokens):
    tokens = earlier_tokens(user.username)
    profile = TraderProfileFactory(user=user)
    resp = operator_client.post(reverse("admin:brokers_traderprofile_changelist"),
                                {"action": "log_out_everywhere", "_selected_action": [profile.pk]}, follow=True)
    assert resp.status_code == 200
    assert_all_ended(tokens)
    assert_all_working(bob_tokens)


def test_staff_without_the_change_user_permission_is_not_offered_the_action(client, user):
    from django.contrib.auth.models import Permission

    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_user"))
    client.force_login(viewer)
    tokens = earlier_tokens(user.username)
    resp = client.post(reverse("admin:auth_user_changelist"),
                       {"action": "log_out_everywhere", "_selected_action": [user.pk]})
    assert resp.status_code in (200, 302, 403)
    assert_all_working(tokens)
    assert not TokenGeneration.objects.filter(user=user, number__gt=0).exists()


def test_without_check_revoke_token_a_host_minted_token_is_bound_by_the_generation_only(user, monkeypatch):
    """A host that leaves SIMPLE_JWT CHECK_REVOKE_TOKEN off mints tokens without the password claim:
    they are not refused for lacking it, and a log-out everywhere still ends them. The apps' own
    login route writes the claim either way, so its tokens still die with the password."""
    from rest_framework_simplejwt.settings import api_settings
    from rest_framework_simplejwt.tokens import AccessToken

    monkeypatch.setattr(api_settings, "CHECK_REVOKE_TOKEN", False)
    token = AccessToken.for_user(user)
    token.payload.pop("hash_password", None)  # as simplejwt writes it with the setting off
    host_minted = str(token)
    assert read_with(host_minted).status_code == 200
    ours = earlier_tokens(user.username)
    user.set_password("a-new-pass-5678")
    user.save()
    assert_all_ended(ours)
    assert read_with(host_minted).status_code == 200
    call_command("log_out_everywhere", user.username)
    assert_401_envelope(read_with(host_minted))


def test_with_check_revoke_token_on_a_token_without_the_password_claim_is_401(user):
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(user)
    del token["hash_password"]
    assert_401_envelope(read_with(str(token)))
