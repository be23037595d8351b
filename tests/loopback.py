"""Real transport failures on 127.0.0.1, for tests that need what `requests` actually raises."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import requests


def raised_by(send: Callable[[], object]) -> requests.RequestException:
    """The exception `send` raised; fails the test if the request went through."""
    try:
        send()
    except requests.RequestException as exc:
        return exc
    raise AssertionError("the request did not fail")


def reset(conn: socket.socket) -> None:
    """Close with a TCP reset (RST) instead of an orderly FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
