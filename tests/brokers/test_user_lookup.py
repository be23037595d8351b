"""The JWT user lookup (brokers.authentication._UserLookup): the ORM's own statement, compiled once, gives
the same user and generation as `select_related("token_generation").get(...)`, in one statement."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import UserManager
from django.db import connection
from django.db.models.query import QuerySet

from brokers import authentication
from brokers.authentication import _UserLookup, _user_with_generation, user_for_token
from brokers.models import TokenGeneration
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
User = get_user_model()


@pytest.fixture(autouse=True)
def fresh_lookups(monkeypatch):
    monkeypatch.setattr(authentication, "_lookups", {})


def _values(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


def _orm(pk):
    return User._default_manager.select_related("token_generation").get(pk=pk)


def test_the_statement_reads_the_users_columns_then_the_generations(user):
    lookup = _UserLookup(User, "default", user.pk)
    assert lookup.usable
    quoted = [f'{connection.ops.quote_name(User._meta.db_table)}.{connection.ops.quote_name(f.column)}'
              for f in User._meta.concrete_fields]
    quoted += [f'{connection.ops.quote_name(TokenGeneration._meta.db_table)}.{connection.ops.quote_name(f.column)}'
               for f in TokenGeneration._meta.concrete_fields]
    select_list = lookup.sql.split(" FROM ")[0].removeprefix("SELECT ")
    assert select_list.split(", ") == quoted
    assert lookup.user_fields == [f.attname for f in User._meta.concrete_fields]
    assert lookup.generation_fields == ["id", "user_id", "number", "changed_at"]


def test_a_user_without_a_generation_row_is_the_orms_user_and_has_generation_0(user, django_assert_num_queries):
    User.objects.filter(pk=user.pk).update(last_login=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
    with django_assert_num_queries(1):
        found = _user_with_generation(user.pk)
    expected = _orm(user.pk)
    assert _values(found) == _values(expected) and found.last_login.tzinfo is not None
    assert found._state.adding is False and found._state.db == "default"
    with django_assert_num_queries(0):
        assert authentication.current_generation(found) == 0
        with pytest.raises(TokenGeneration.DoesNotExist):
            found.token_generation  # noqa: B018 - the cached "no row", as select_related leaves it


def test_a_user_with_a_generation_row_carries_it_cached_both_ways(user, django_assert_num_queries):
    TokenGeneration.objects.create(user=user, number=3)
    with django_assert_num_queries(1):
        found = _user_with_generation(user.pk)
    with django_assert_num_queries(0):
        generation = found.token_generation
        assert generation.user is found and authentication.current_generation(found) == 3
    assert _values(generation) == _values(_orm(user.pk).token_generation)


def test_an_unknown_or_inactive_user_is_refused_as_before(user):
    assert _user_with_generation(user.pk + 1000) is None
    from rest_framework_simplejwt.tokens import AccessToken

    User.objects.filter(pk=user.pk).update(is_active=False)
    with pytest.raises(authentication.AuthenticationFailed):
        user_for_token(AccessToken.for_user(user))


def test_requests_authenticate_without_the_orms_get(api_client, monkeypatch, django_assert_num_queries):
    def refuse(self, *args, **kwargs):
        raise AssertionError("the user was read through QuerySet.get")

    monkeypatch.setattr(QuerySet, "get", refuse)
    resp = api_client.get("/api/equity/events")
    assert resp.status_code == 200, resp.content


@pytest.mark.parametrize("keeps_the_statement", [True, False])
def test_a_user_manager_that_filters_is_obeyed(monkeypatch, keeps_the_statement):
    """The manager's own filter is compiled into the statement; one with parameters of its own besides the
    id (here a username prefix) is read through the ORM."""
    class Filtering(UserManager):
        def get_queryset(self):
            rows = super().get_queryset().filter(is_active=True)
            return rows if keeps_the_statement else rows.filter(username__startswith="shown")

    manager = Filtering()
    manager.model = User
    monkeypatch.setattr(User._meta, "default_manager", manager)
    hidden, shown = UserFactory(is_active=False), UserFactory(username="shown-1")
    assert _UserLookup(User, "default", hidden.pk).usable is keeps_the_statement
    assert _user_with_generation(hidden.pk) is None
    assert _user_with_generation(shown.pk).pk == shown.pk
