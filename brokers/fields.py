"""Credentials encrypted at rest with MultiFernet keys from EQUITY_ORDERS["CREDENTIALS_KEYS"].

The first key encrypts; every key decrypts, so keys rotate by prepending a new one and running
`manage.py rotate_credentials`. A value no key can decrypt raises instead of being returned as
if it were the secret.
"""

from __future__ import annotations

import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from brokers.conf import conf
from django.core.exceptions import ImproperlyConfigured
from django.db import models


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured('EQUITY_ORDERS["CREDENTIALS_KEYS"] is empty.')
    return MultiFernet([Fernet(k.encode()) for k in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(conf.CREDENTIALS_KEYS))


_UNDECRYPTABLE = 'no key in EQUITY_ORDERS["CREDENTIALS_KEYS"] decrypts these credentials'


class CredentialsUndecryptable(Exception):
    """No configured key decrypts the stored value (a key was removed too early)."""


def encrypt_json(value: dict) -> str:
    return fernet().encrypt(json.dumps(value, sort_keys=True).encode()).decode()


def decrypt_json(token: str) -> dict:
    try:
        return json.loads(fernet().decrypt(token.encode()))
    except InvalidToken as exc:
        raise CredentialsUndecryptable(_UNDECRYPTABLE) from exc


def rotate_token(token: str) -> str | None:
    """`token` re-encrypted under the newest key; None when the newest key already encrypted it.

    The plaintext never leaves this function. Raises CredentialsUndecryptable when no key reads it.
    """
    try:
        Fernet(conf.CREDENTIALS_KEYS[0].encode()).decrypt(token.encode())
    except InvalidToken:
        try:
            return fernet().rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise CredentialsUndecryptable(_UNDECRYPTABLE) from exc
    return None


class EncryptedJSONField(models.TextField):
    """A dict stored as one Fernet token; never readable in the database."""

    def from_db_value(self, value, expression, connection):
        if value is None:
            return value
        return decrypt_json(value)

    def to_python(self, value):
        if value is None or isinstance(value, dict):
            return value
        return decrypt_json(value)

    def get_prep_value(self, value):
        if value is None:
            return None
        return encrypt_json(value)
