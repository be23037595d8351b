"""JWTs that name a real user and die with the password or an operator's "log out everywhere".

simplejwt alone had three gaps: a validly signed token whose `user_id` claim is not an id of the
user model (`"1 OR 1=1"`, `[1]`, `"1\\u0000"`) reached the ORM and was a 500 on every route; the
refresh of a deleted user's token raised `User.DoesNotExist` (a 500); and a password change left
every earlier token working, the refresh token minting new access tokens for a day.

Here every use of a token, access or refresh, goes through `user_for_token`:

- the `user_id` claim must be a string or integer that the user model's primary key accepts;
- the user must exist and be active;
- the `hash_password` claim (simplejwt's own, written by `Token.for_user` when SIMPLE_JWT
  CHECK_REVOKE_TOKEN is on, and always by the apps' login route) must match the user's current
  password hash; without that setting a token minted by a host's own code, which lacks the claim,
  is bound by the generation only;
- the `token_generation` claim (absent = 0) must be the user's current `TokenGeneration`.

Anything else is 401 NOT_AUTHENTICATED. An access token made from a refresh token copies both
claims, so it dies with it.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import connections, router
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.utils.translation import gettext_lazy as _
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import get_md5_hash_password

from brokers.login_throttle import give_back, take_login_slots
from brokers.token_expiry import expired_access_token_refusal

GENERATION_CLAIM = "token_generation"


def _refused(detail: str, code: str) -> AuthenticationFailed:
    return AuthenticationFailed(detail, code=code)


def _user_id_of(claim_value):
    """The claim as a value of the user model's primary key field, or a 401."""
    invalid = _refused(_("Token contained no recognizable user identification"), "bad_user_id")
    if isinstance(claim_value, bool) or not isinstance(claim_value, (str, int)):
        raise invalid
    if isinstance(claim_value, str) and (not claim_value or "\x00" in claim_value or len(claim_value) > 255):
        raise invalid
    field = get_user_model()._meta.get_field(api_settings.USER_ID_FIELD)
    try:
        value = field.to_python(claim_value)
        field.run_validators(value)  # an integer beyond the column's range is no id either
    except (ValidationError, TypeError, ValueError, OverflowError):
        raise invalid from None
    # Only the id as simplejwt writes it (str(pk)) or the integer itself: int() would also take
    # "1 ", "01" or a full-width "１" for 1.
    if (str(value) if isinstance(claim_value, str) else value) != claim_value:
        raise invalid
    return value


def current_generation(user) -> int:
    try:
        return user.token_generation.number
    except ObjectDoesNotExist:
        return 0


def _password_claim_matches(token, user) -> bool:
    claim = token.get(api_settings.REVOKE_TOKEN_CLAIM)
    if claim is None:
        # Every token of the apps' login route has the claim. One without it comes from a host's own
        # code: with CHECK_REVOKE_TOKEN on, simplejwt writes it into every token, so its absence is
        # refused; with it off, the host's tokens cannot carry it, and only the generation binds them.
        return not api_settings.CHECK_REVOKE_TOKEN
    return claim == get_md5_hash_password(user.password or "")


def user_for_token(token):
    """The token's user, if the token is still theirs to use; else AuthenticationFailed (401)."""
    if api_settings.USER_ID_CLAIM not in token:
        raise _refused(_("Token contained no recognizable user identification"), "bad_user_id")
    user_id = _user_id_of(token[api_settings.USER_ID_CLAIM])
    user = _user_with_generation(user_id)
    if user is None:
        raise _refused(_("User not found"), "user_not_found") from None
    if not api_settings.USER_AUTHENTICATION_RULE(user):
        raise _refused(_("User is inactive"), "user_inactive")
    if not _password_claim_matches(token, user):
        raise _refused(_("The user's password has been changed."), "password_changed")
    if token.get(GENERATION_CLAIM, 0) != current_generation(user):
        raise _refused(_("This token was ended by a log-out everywhere."), "token_ended")
    return user


class _UserLookup:
    """The statement `select_related("token_generation").get(<USER_ID_FIELD>=...)` compiles to, compiled
    once per database alias and run through the cursor, with the ORM's own converters on each column.

    Every request of the API authenticates, and the ORM spent ~0.4 ms of CPU building and compiling
    this one query each time; the row, the instances (`from_db`) and the related cache that
    `select_related` fills are the same as the ORM's. The default manager's queryset is what is
    compiled, so a host manager's own filter is in the statement; one that brings parameters of its
    own besides the id keeps the ORM path (`usable`).
    """

    def __init__(self, user_model, alias: str, user_id):
        from brokers.models import TokenGeneration

        connection = connections[alias]  # this thread's; get() takes its own thread's each time
        self.user_model, self.generation_model, self.alias = user_model, TokenGeneration, alias
        self.id_field = user_model._meta.get_field(api_settings.USER_ID_FIELD)
        compiler = user_model._default_manager.select_related("token_generation").filter(
            **{api_settings.USER_ID_FIELD: user_id}).query.get_compiler(using=alias)
        self.sql, params = compiler.as_sql()
        # The id is the statement's only parameter, as the ORM prepares it.
        self.usable = list(params) == [self._prepared(user_id, connection)]
        select = [col for col, _, _ in compiler.select]
        self.converters = [(col, connection.ops.get_db_converters(col) + col.get_db_converters(connection))
                           for col in select]
        self.user_fields = [f.attname for f in user_model._meta.concrete_fields]
        self.generation_fields = [f.attname for f in TokenGeneration._meta.concrete_fields]
        # The select list is the user's concrete fields, then the generation's: the shape the
        # instances are built from (pinned by tests/brokers/test_user_lookup.py).
        self.usable &= [getattr(col, "target", None) and col.target.attname for col in select] == \
            self.user_fields + self.generation_fields
        self.generation_rel = user_model._meta.get_field("token_generation")

    def _prepared(self, user_id, connection):
        return self.id_field.get_db_prep_value(user_id, connection, prepared=False)

    def get(self, user_id):
        connection = connections[self.alias]
        with connection.cursor() as cursor:
            cursor.execute(self.sql, [self._prepared(user_id, connection)])
            row = cursor.fetchone()
        if row is None:
            return None
        values = list(row)
        for i, (col, converters) in enumerate(self.converters):
            for converter in converters:
                values[i] = converter(values[i], col, connection)
        n = len(self.user_fields)
        user = self.user_model.from_db(self.alias, self.user_fields, values[:n])
        generation = None
        if values[n] is not None:  # the LEFT JOIN found the user's TokenGeneration row
            generation = self.generation_model.from_db(self.alias, self.generation_fields, values[n:])
            self.generation_rel.remote_field.set_cached_value(generation, user)
        self.generation_rel.set_cached_value(user, generation)  # None: user.token_generation raises
        return user


_lookups: dict = {}


def _user_with_generation(user_id):
    """The user with this id and its TokenGeneration (cached on it, as select_related does), or None."""
    user_model = get_user_model()
    alias = router.db_for_read(user_model)
    key = (user_model, alias, api_settings.USER_ID_FIELD)
    lookup = _lookups.get(key)
    if lookup is None:
        lookup = _lookups[key] = _UserLookup(user_model, alias, user_id)
    if lookup.usable:
        return lookup.get(user_id)
    try:
        # The generation comes in the same query: authentication stays one query per request.
        return user_model._default_manager.select_related("token_generation").get(
            **{api_settings.USER_ID_FIELD: user_id})
    except user_model.DoesNotExist:
        return None


def issue_refresh_token(user):
    """A refresh token bound to the user's current password and token generation."""
    token = RefreshToken.for_user(user)
    token[api_settings.REVOKE_TOKEN_CLAIM] = get_md5_hash_password(user.password or "")
    token[GENERATION_CLAIM] = current_generation(user)
    return token


class PasswordBoundJWTAuthentication(JWTAuthentication):
    """simplejwt's bearer authentication, with every token checked by `user_for_token`; an expired
    access token's 401 says when it expired and where to refresh it (brokers.token_expiry)."""

    def get_validated_token(self, raw_token):
        try:
            return super().get_validated_token(raw_token)
        except InvalidToken:
            refusal = expired_access_token_refusal(raw_token)
            if refusal is None:
                raise
            raise refusal from None

    def get_user(self, validated_token):
        return user_for_token(validated_token)


class LoginSerializer(TokenObtainPairSerializer):
    """POST /api/auth/token: failed logins are throttled (brokers.login_throttle) before any
    password is hashed; the tokens are bound to the password and the token generation."""

    @classmethod
    def get_token(cls, user):
        return issue_refresh_token(user)

    def validate(self, attrs):
        request = self.context.get("request")
        slots = take_login_slots(request, attrs[self.username_field])
        data = super().validate(attrs)  # AuthenticationFailed: the attempt stays counted
        give_back(slots)
        return data


class RefreshSerializer(TokenRefreshSerializer):
    """POST /api/auth/token/refresh: only a token that `user_for_token` accepts mints an access token."""

    def validate(self, attrs):
        refresh = self.token_class(attrs["refresh"])
        user_for_token(refresh)
        # Refresh tokens are not rotated (SIMPLE_JWT ROTATE_REFRESH_TOKENS stays off): the access
        # token copies the refresh token's claims, the password and generation ones included.
        return {"access": str(refresh.access_token)}


class PasswordBoundJWTScheme(SimpleJWTScheme):
    """The schema's bearer scheme for the subclass, as drf-spectacular documents simplejwt's.

    A name of its own: in a host whose own views use simplejwt's class, two classes under one name
    ("jwtAuth") would be a schema warning. Both take the same bearer token.
    """

    target_class = PasswordBoundJWTAuthentication
    name = "equityOrdersJwtAuth"
