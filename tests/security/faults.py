"""Faults for the wire fakes of tests/brokers/venues: the next matching call fails as told."""

from __future__ import annotations

from urllib.parse import urlsplit

import requests


class Faults:
    """Stands between a wire fake and `responses`: the next matching call fails as told.

    Pass it to a fake's install() in place of the RequestsMock; `fail_next(method, path, outcome)`
    where outcome is a (status, headers, body) triple or a function of the request that returns an
    exception to raise (as requests raises it). With after=True the fake handles the call first,
    and only its reply is lost.
    """

    def __init__(self, mock):
        self._mock = mock
        self._pending: list[tuple[str, str, object, bool]] = []

    def add_callback(self, method, url, callback, **kwargs):
        def faulty(request):
            for i, (wanted, path, outcome, after) in enumerate(self._pending):
                if request.method == wanted and urlsplit(request.url).path == path:
                    del self._pending[i]
                    if after:
                        callback(request)
                    if callable(outcome):
                        raise outcome(request)
                    return outcome
            return callback(request)

        self._mock.add_callback(method, url, callback=faulty, **kwargs)

    def fail_next(self, method: str, path: str, outcome, *, times: int = 1, after: bool = False) -> None:
        self._pending += [(method, path, outcome, after)] * times


def connection_lost(request):
    """What requests raises when the connection drops: its message carries the path and query."""
    parts = urlsplit(request.url)
    return requests.exceptions.ConnectionError(
        f"HTTPSConnectionPool(host='{parts.hostname}', port={parts.port or 443}): Max retries exceeded with url: "
        f"{parts.path}?{parts.query} (Caused by ProtocolError('Connection aborted.', "
        "RemoteDisconnected('Remote end closed connection without response')))")


def read_timeout(request):
    parts = urlsplit(request.url)
    return requests.exceptions.ReadTimeout(
        f"HTTPSConnectionPool(host='{parts.hostname}', port={parts.port or 443}): Read timed out. (read timeout=10)")


GATEWAY_TIMEOUT = (504, {"Content-Type": "text/html"}, "<html><body><h1>504 Gateway Time-out</h1></body></html>")
