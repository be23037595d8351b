"""One log line per request: method, path, status, duration, user id, request id (and the error code).

The level says who has to act: a success or a refusal the client caused is INFO, a refusal an
operator may want to see (429, a disabled feature, a broker that did not answer) is WARNING, and
only our own faults (500, our database or cache unreachable) are ERROR. Django's own per-request
lines (`django.request` for every 4xx and 5xx, `django.server` under runserver) would print each
refusal a second time: the demo site's LOGGING keeps only their tracebacks (see `only_tracebacks`).

The request id is the server's own, made here for every request: it is set on the request
(`request.request_id`) so the audit rows carry the same id, and sent in the response's
`X-Request-ID` header so a client can quote it. A client's own `X-Request-ID` never replaces it
(a client must not choose the id under which its requests are logged and audited); when it is 1 to
64 of [A-Za-z0-9._:-] it is logged beside it as `client_request_id`, as the audit rows keep it.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from django.utils.functional import empty

logger = logging.getLogger("equity.requests")

# As audit.services keeps a client's X-Request-ID: anything else is dropped.
_CLIENT_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")

# Refusals that are not the client's doing and that an operator may need to act on.
_WARNING_CODES = {"RATE_LIMIT_EXCEEDED", "RATE_LIMIT_LIVE_DAILY", "FEATURE_DISABLED", "BROKER_UNAVAILABLE"}
# Our own faults: a bug, or a dependency of ours (database, shared cache) that is down.
_ERROR_CODES = {"INTERNAL_ERROR", "SERVICE_UNAVAILABLE"}


def level_for(status: int, code: str | None) -> int:
    if code in _ERROR_CODES or (status >= 500 and code not in _WARNING_CODES):
        return logging.ERROR
    if code in _WARNING_CODES or status == 429:
        return logging.WARNING
    return logging.INFO


def client_request_id_of(request) -> str | None:
    given = request.META.get("HTTP_X_REQUEST_ID", "")
    return given if _CLIENT_REQUEST_ID_RE.fullmatch(given) else None


def _user_id(request):
    """The user the request was served as, without a query: an unread lazy session user stays unread."""
    user = request.__dict__.get("user")
    if user is None or getattr(user, "_wrapped", None) is empty:
        return None
    return getattr(user, "pk", None) if getattr(user, "is_authenticated", False) else None


def _error_code(response) -> str | None:
    if response.status_code < 400:
        return None
    data = getattr(response, "data", None)  # a DRF Response
    if not isinstance(data, dict) and response.get("Content-Type", "").startswith("application/json") \
            and not response.streaming and len(response.content) < 65536:
        try:
            data = json.loads(response.content)
        except ValueError:
            data = None
    code = data.get("code") if isinstance(data, dict) else None
    return code if isinstance(code, str) else None


def only_tracebacks(record: logging.LogRecord) -> bool:
    """Filter for django.request / django.server: keep a record only if it carries a traceback."""
    return record.exc_info is not None


class RequestLogMiddleware:
    """Put it first in MIDDLEWARE: it then times and sees the final answer of every other layer."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.monotonic()
        request.request_id = uuid.uuid4().hex
        response = self.get_response(request)
        try:
            response.setdefault("X-Request-ID", request.request_id)
            status, code = response.status_code, _error_code(response)
            duration_ms = (time.monotonic() - started) * 1000
            user_id, client_request_id = _user_id(request), client_request_id_of(request)
            logger.log(level_for(status, code), "%s %s %s %.1fms user=%s request_id=%s%s%s", request.method,
                       request.path, status, duration_ms, user_id if user_id is not None else "-",
                       request.request_id, f" client_request_id={client_request_id}" if client_request_id else "",
                       f" code={code}" if code else "",
                       extra={"method": request.method, "path": request.path, "status": status,
                              "duration_ms": round(duration_ms, 1), "user_id": user_id,
                              "request_id": request.request_id, "client_request_id": client_request_id,
                              "code": code})
        except Exception:  # a log line must never cost the client its answer
            logger.exception("request log line failed")
        return response
