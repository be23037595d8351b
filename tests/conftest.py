"""Shared fixtures. The network is closed to tests: broker HTTP is mocked with `responses`."""

from __future__ import annotations

import socket

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any real outbound connection (not loopback) fails the test loudly."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1") or host.startswith("/")):
            return real_connect(self, address)
        raise RuntimeError(f"tests must not reach the network (tried {address!r})")

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()
