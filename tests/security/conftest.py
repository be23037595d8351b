"""Fixtures of the security suite: `evidence` (see evidence.py)."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from tests.security.evidence import Evidence


@pytest.fixture
def evidence(caplog, settings, monkeypatch, equity_orders):
    """Everything logged at DEBUG by every logger, fresh Fernet keys, and the recorder."""
    equity_orders.CREDENTIALS_KEYS = [Fernet.generate_key().decode(), Fernet.generate_key().decode()]
    caplog.set_level(logging.DEBUG)
    quiet = []
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        if logger.level:  # urllib3, django.server...: their own level would hide DEBUG
            caplog.set_level(logging.DEBUG, logger=name)
        if not logger.propagate:  # records that never reach the root handler
            logger.addHandler(caplog.handler)
            quiet.append(logger)
    monkeypatch.setattr(connection, "force_debug_cursor", True)  # SQL and its parameters are logged too
    found = Evidence(caplog)
    for position, key in enumerate(equity_orders.CREDENTIALS_KEYS, start=1):
        found.secret(f"Fernet key {position}", key)
    found.secret("SECRET_KEY", settings.SECRET_KEY)
    yield found
    for logger in quiet:
        logger.removeHandler(caplog.handler)
