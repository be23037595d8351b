"""Credentials at rest rotate: `manage.py rotate_credentials` re-encrypts under the newest key."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from brokers.fields import CredentialsUndecryptable
from brokers.models import BrokerAccount, KisAccessToken
from tests.factories import BrokerAccountFactory, UserFactory

pytestmark = pytest.mark.django_db

ALPACA = {"api_key": "PKROTATEKEYID00000042", "secret_key": "rotate-secret-value-0000000000000000042"}
KIS = {"app_key": "PSrotateAppKey00000000000000000000042", "app_secret": "R" * 180, "account_no": "73920418-01"}
KIS_TOKEN = {"access_token": "kis-access-token-rotate-0000000000000042"}


def new_key() -> str:
    return Fernet.generate_key().decode()


def rotate() -> str:
    out = StringIO()
    call_command("rotate_credentials", stdout=out)
    return out.getvalue()


def raw(table: str, column: str) -> list[str]:
    with connection.cursor() as cur:
        cur.execute(f"SELECT {column} FROM {table} ORDER BY id")
        return [row[0] for row in cur.fetchall()]


def decrypts_with(key: str, token: str) -> bool:
    try:
        Fernet(key.encode()).decrypt(token.encode())
    except Exception:
        return False
    return True


@pytest.fixture
def stored_under_old_key(settings, equity_orders):
    """Two connections and a KIS token written under `old`; then `new` is put first."""
    old, new = new_key(), new_key()
    equity_orders.CREDENTIALS_KEYS = [old]
    user = UserFactory()
    BrokerAccountFactory(user=user, asset_class="us_equity", exchange="alpaca", credentials=ALPACA)
    BrokerAccountFactory(user=user, asset_class="kr_equity", exchange="kis", credentials=KIS)
    KisAccessToken.objects.create(environment="paper", app_key_digest="d" * 64, token=KIS_TOKEN,
                                  expires_at=timezone.now() + timedelta(hours=20))
    equity_orders.CREDENTIALS_KEYS = [new, old]
    return old, new


def test_before_rotation_the_old_key_second_in_the_list_still_decrypts(stored_under_old_key):
    assert [a.credentials for a in BrokerAccount.objects.order_by("id")] == [ALPACA, KIS]
    assert KisAccessToken.objects.get().token == KIS_TOKEN


def test_rotation_re_encrypts_every_row_under_the_newest_key_and_reports_counts(stored_under_old_key):
    old, new = stored_under_old_key
    report = rotate()
    assert "broker credentials: 2 re-encrypted, 0 already under the newest key, 0 undecryptable" in report
    assert "KIS access tokens: 1 re-encrypted, 0 already under the newest key, 0 undecryptable" in report
    for token in raw("brokers_brokeraccount", "credentials") + raw("brokers_kisaccesstoken", "token"):
        assert decrypts_with(new, token) and not decrypts_with(old, token)


def test_after_rotation_the_old_key_can_be_removed(stored_under_old_key, settings, equity_orders):
    _, new = stored_under_old_key
    rotate()
    equity_orders.CREDENTIALS_KEYS = [new]
    assert [a.credentials for a in BrokerAccount.objects.order_by("id")] == [ALPACA, KIS]
    assert KisAccessToken.objects.get().token == KIS_TOKEN


def test_without_rotation_removing_the_old_key_loses_the_credentials(stored_under_old_key, settings, equity_orders):
    _, new = stored_under_old_key
    equity_orders.CREDENTIALS_KEYS = [new]
    with pytest.raises(CredentialsUndecryptable):
        list(BrokerAccount.objects.all())


def test_rotation_is_idempotent(stored_under_old_key):
    rotate()
    before = raw("brokers_brokeraccount", "credentials") + raw("brokers_kisaccesstoken", "token")
    report = rotate()
    assert "broker credentials: 0 re-encrypted, 2 already under the newest key, 0 undecryptable" in report
    assert "KIS access tokens: 0 re-encrypted, 1 already under the newest key, 0 undecryptable" in report
    assert raw("brokers_brokeraccount", "credentials") + raw("brokers_kisaccesstoken", "token") == before


def test_rotation_leaves_the_rest_of_the_row_alone(stored_under_old_key):
    before = list(BrokerAccount.objects.order_by("id").values("id", "user_id", "exchange", "key_hint", "status",
                                                                "created_at"))
    expires = KisAccessToken.objects.get().expires_at
    rotate()
    assert list(BrokerAccount.objects.order_by("id").values("id", "user_id", "exchange", "key_hint", "status",
                                                             "created_at")) == before
    assert KisAccessToken.objects.get().expires_at == expires


def test_the_report_names_no_secret(stored_under_old_key, settings, equity_orders):
    report = rotate() + rotate()
    for secret in [*ALPACA.values(), *KIS.values(), KIS_TOKEN["access_token"], *equity_orders.CREDENTIALS_KEYS]:
        assert secret not in report


def test_credentials_no_key_decrypts_fail_the_command_by_id_after_rotating_the_rest(stored_under_old_key, settings):
    _, new = stored_under_old_key
    lost = BrokerAccount.objects.order_by("id").first()
    with connection.cursor() as cur:  # written under a key that has since been dropped
        cur.execute("UPDATE brokers_brokeraccount SET credentials = %s WHERE id = %s",
                    [Fernet(new_key().encode()).encrypt(b'{"api_key": "x"}').decode(), lost.pk])
    out = StringIO()
    with pytest.raises(CommandError, match=rf"broker connections \[{lost.pk}\]"):
        call_command("rotate_credentials", stdout=out)
    assert "broker credentials: 1 re-encrypted, 0 already under the newest key, 1 undecryptable" in out.getvalue()
    kept = raw("brokers_brokeraccount", "credentials")[1]
    assert decrypts_with(new, kept)
