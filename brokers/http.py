"""What a failed `requests` call tells about the broker: did the request provably never reach it?

One answer for every HTTP adapter (alpaca through alpaca-py, kis, upbit). It picks between the two
paths of a placement (SPEC "Edge cases, decided"): "never sent" lets the client retry (502
BROKER_UNAVAILABLE), "may have been sent" looks the order up first. A wrong "never sent" can mean a
second order; a wrong "may have been sent" only costs a lookup. So every doubt answers False.

Written against requests 2.32 and urllib3 2.x, whose exceptions it reads. It assumes what all three
adapters do: no urllib3 retries (requests' default max_retries=0, so the error is the first
attempt's) and no redirects followed (allow_redirects=False: an error while following a redirect
comes after the broker has answered).
"""

from __future__ import annotations

from types import TracebackType

import requests
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError
from urllib3.exceptions import InvalidHeader as _InvalidResponseHeader
from urllib3.exceptions import ProxyError as _Urllib3ProxyError

# Raised while the request is still being prepared, before any connection is opened.
_REFUSED_BEFORE_CONNECTING = (
    requests.exceptions.InvalidURL,  # InvalidProxyURL too
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.URLRequired,
)
# No socket was opened, to the broker or to the proxy. In urllib3 2.x NewConnectionError (refused,
# unreachable; NameResolutionError for DNS) subclasses ConnectTimeoutError: both named all the same.
_NO_SOCKET = (NewConnectionError, ConnectTimeoutError)
# urllib3 opens a connection in connect(): TCP connect, the proxy's CONNECT tunnel, the TLS handshake
# and the certificate checks. The request is written only after connect() has returned.
_CONNECT = frozenset({HTTPConnection.connect.__code__, HTTPSConnection.connect.__code__})


def never_sent(exc: requests.RequestException) -> bool:
    """True only when no byte of the request can have reached the broker.

    Never sent:
    - ConnectTimeout;
    - InvalidURL, MissingSchema, InvalidSchema, URLRequired, and an InvalidHeader or InvalidJSONError
      raised while preparing the request;
    - a ConnectionError (SSLError and ProxyError included) whose urllib3 cause is NewConnectionError
      (refused, DNS) or ConnectTimeoutError, to the broker or to the proxy, or was raised inside
      urllib3's connect(): a failed TLS handshake or certificate check, a reset during the
      handshake, a CONNECT the proxy refused (407, 502).

    May have been sent (False), among others: read timeouts, resets and disconnects after
    connecting, ChunkedEncodingError, ContentDecodingError, an unreadable body, and

    - SSLError after the handshake: urllib3 raises the same SSLError for a TLS failure while the
      request is written or the answer read (e.g. DECRYPTION_FAILED_OR_BAD_RECORD_MAC);
    - InvalidHeader wrapping urllib3's: the broker's answer had conflicting Content-Lengths;
    - ProxyError, unless its cause is one of the above. urllib3 says "Unable to connect to proxy"
      also when the connection drops after the request went through the proxy (a forwarding
      proxy, or a CONNECT tunnel that delivered it): http.client closes the connection on the
      disconnect, which resets urllib3's has_connected_to_proxy. The class cannot tell the two
      apart; only where the wrapped cause was raised can.
    - anything built without its urllib3 cause or traceback (a test double, an unpickled error).
    """
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, _REFUSED_BEFORE_CONNECTING):
        return True
    if isinstance(exc, requests.exceptions.InvalidHeader):
        return not isinstance(_cause(exc), _InvalidResponseHeader)
    if isinstance(exc, requests.exceptions.InvalidJSONError):
        return not isinstance(exc, requests.exceptions.JSONDecodeError)  # our body, not their answer
    if isinstance(exc, requests.exceptions.ConnectionError):
        cause = _cause(exc)
        if isinstance(cause, _Urllib3ProxyError):
            cause = cause.original_error
        return isinstance(cause, _NO_SOCKET) or _raised_while_connecting(cause)
    return False


def _cause(exc: requests.RequestException) -> object:
    """The urllib3 error a requests exception carries (requests wraps urllib3's MaxRetryError)."""
    wrapped = exc.args[0] if exc.args else None
    return wrapped.reason if isinstance(wrapped, MaxRetryError) else wrapped


def _raised_while_connecting(error: object) -> bool:
    """True when `error`, or an error it wraps, was raised inside urllib3's connect().

    urllib3 wraps the ssl module's or the socket's error (SSLError(err), ProtocolError("Connection
    aborted.", err)), at times without raising the wrapper: the original, with its traceback, is
    in the wrapper's args.
    """
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if _passes_through_connect(current.__traceback__):
            return True
        pending.extend([current.__cause__, *current.args])
    return False


def _passes_through_connect(tb: TracebackType | None) -> bool:
    while tb is not None:
        if tb.tb_frame.f_code in _CONNECT:
            return True
        tb = tb.tb_next
    return False
