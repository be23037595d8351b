"""Writes for broker connections: connect (checking the keys with the broker) and disconnect."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.db.models import F

from brokers.models import BrokerAccount, TokenGeneration, TraderProfile
from brokers.registry import build_adapter
from brokers.errors import ConnectionNotFound, CredentialsRefused, InvalidRequest

logger = logging.getLogger(__name__)

_KEY_ID_FIELDS = ("api_key", "app_key", "access_key")


def _key_hint(credentials: dict) -> str:
    for name in _KEY_ID_FIELDS:
        if credentials.get(name):
            return credentials[name][-4:]
    return ""


def connect_broker(*, user, asset_class: str, exchange: str, environment: str, label: str = "",
                   credentials: dict) -> BrokerAccount:
    duplicate = InvalidRequest(
        f"You already have a {environment} {asset_class} connection; delete it first.",
        errors={"asset_class": [f"One {environment} connection per asset class."]})
    if BrokerAccount.objects.filter(user=user, asset_class=asset_class, environment=environment).exists():
        raise duplicate
    connection = BrokerAccount(user=user, asset_class=asset_class, exchange=exchange, environment=environment,
                               label=label, credentials=credentials, key_hint=_key_hint(credentials))
    try:
        with transaction.atomic():
            connection.save()
    except IntegrityError as exc:
        raise duplicate from exc
    # A cheap authenticated call proves the keys before anyone trades on them. It runs outside
    # any transaction (a slow broker must not hold a database lock); a refusal or an outage
    # removes the connection again.
    try:
        build_adapter(connection).account()
    except CredentialsRefused as exc:
        connection.delete()
        raise InvalidRequest(f"{exchange} refused these credentials.",
                             errors={"credentials": [f"{exchange} refused these credentials."]}) from exc
    except Exception:
        connection.delete()
        raise
    logger.info("broker connected", extra={"user_id": user.pk, "exchange": exchange, "environment": environment})
    return connection


def disconnect_broker(*, user, connection_id: int) -> None:
    deleted, _ = BrokerAccount.objects.filter(user=user, pk=connection_id).delete()
    if not deleted:
        raise ConnectionNotFound()


def set_live_enabled(*, user, enabled: bool) -> TraderProfile:
    from django.utils import timezone

    profile, _ = TraderProfile.objects.get_or_create(user=user)
    profile.live_enabled = enabled
    profile.live_enabled_at = timezone.now() if enabled else None
    profile.save()
    return profile


def log_out_everywhere(*, user) -> int:
    """Ends every access and refresh token issued to `user` so far; returns the new generation.

    Tokens carry the generation they were issued in (brokers.authentication): bumping it in one UPDATE
    refuses every earlier token on its next use, in every worker, with no list of tokens kept.
    A new login afterwards gets a token of the new generation.
    """
    TokenGeneration.objects.get_or_create(user=user)
    from django.utils import timezone

    TokenGeneration.objects.filter(user=user).update(number=F("number") + 1, changed_at=timezone.now())
    number = TokenGeneration.objects.get(user=user).number
    logger.info("log out everywhere", extra={"user_id": user.pk, "token_generation": number})
    return number
