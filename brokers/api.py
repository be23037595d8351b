"""The apps' API policy: the one exception handler and the base view policy every view of the apps uses.

Every failure of the apps' routes becomes {"code", "detail"[, "errors"]}, whatever the host's
REST_FRAMEWORK says: a host may run DRF with AllowAny, its own EXCEPTION_HANDLER,
COERCE_DECIMAL_TO_STRING and a non-UTC TIME_ZONE, and the apps' routes still require a logged-in
user, answer in the envelope, send amounts as JSON numbers and timestamps in UTC with a `Z`. The
host's own views are untouched (nothing here is global).
"""

from __future__ import annotations

import logging
from datetime import UTC

from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, DataError, IntegrityError, InterfaceError
from django.http import Http404
from django.utils import timezone
from django.utils.module_loading import import_string
from rest_framework import exceptions, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import set_rollback

from brokers.conf import conf
from brokers.errors import DomainError, ServiceUnavailable
from brokers.parsers import BoundedJSONParser
from brokers.renderers import OrjsonJSONRenderer

logger = logging.getLogger(__name__)

_DRF_CODES = {
    exceptions.NotAuthenticated: "NOT_AUTHENTICATED",
    exceptions.AuthenticationFailed: "NOT_AUTHENTICATED",
    exceptions.PermissionDenied: "PERMISSION_DENIED",
    exceptions.NotFound: "NOT_FOUND",
    exceptions.MethodNotAllowed: "METHOD_NOT_ALLOWED",
    exceptions.NotAcceptable: "NOT_ACCEPTABLE",
    exceptions.UnsupportedMediaType: "UNSUPPORTED_MEDIA_TYPE",
    exceptions.ParseError: "VALIDATION_ERROR",
    exceptions.Throttled: "RATE_LIMIT_EXCEEDED",
}


def error_body(code: str, detail: str, errors: dict | None = None) -> dict:
    body = {"code": code, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return body


def _flatten(detail) -> dict:
    """DRF's nested ValidationError detail as {field: [messages]}."""
    if isinstance(detail, dict):
        out = {}
        for key, value in detail.items():
            if isinstance(value, dict):
                for sub, msgs in _flatten(value).items():
                    out[f"{key}.{sub}" if sub != "non_field_errors" else key] = msgs
            else:
                out[key] = [str(m) for m in (value if isinstance(value, list) else [value])]
        return out
    return {"non_field_errors": [str(m) for m in (detail if isinstance(detail, list) else [detail])]}


# The database answered and refused a value or a constraint: a bug (a value that validation let
# through), never an outage; left to the middleware, which logs it and answers 500.
_REFUSED_BY_THE_DATABASE = (DataError, IntegrityError)


def is_database_outage(exc: BaseException) -> bool:
    return isinstance(exc, (DatabaseError, InterfaceError)) and not isinstance(exc, _REFUSED_BY_THE_DATABASE)


def _unsupported_media_type_detail(context) -> str:
    """Which type the route takes, and which one came: a form body (curl without -H 'Content-Type:
    application/json') is the usual mistake, and used to be answered as an unknown field."""
    request = context.get("request")
    accepted = [parser.media_type for parser in getattr(request, "parsers", None) or [BoundedJSONParser]]
    sent = (getattr(request, "content_type", "") or "").split(";")[0].strip()[:100] or "none"
    expected = " or ".join(accepted)
    return f"The body must be {expected}: add the header 'Content-Type: {accepted[0]}' (this request sent {sent})."


def api_exception_handler(exc, context):
    if isinstance(exc, DomainError):
        set_rollback()
        return Response(error_body(exc.code, exc.detail, exc.errors), status=exc.status_code, headers=exc.headers)

    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        first = next(iter(errors.items()), ("request", ["invalid"]))
        detail = f"{first[0]}: {first[1][0]}" if first[0] != "non_field_errors" else first[1][0]
        return Response(error_body("VALIDATION_ERROR", detail, errors), status=status.HTTP_400_BAD_REQUEST)

    if is_database_outage(exc):
        logger.warning("database unavailable: %s", exc.__class__.__name__)
        err = ServiceUnavailable("The database is unavailable; nothing was changed. Retry shortly.")
        return Response(error_body(err.code, err.detail), status=err.status_code)

    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    if isinstance(exc, exceptions.UnsupportedMediaType):
        return Response(error_body("UNSUPPORTED_MEDIA_TYPE", _unsupported_media_type_detail(context)),
                        status=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE)

    if isinstance(exc, exceptions.APIException):
        code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "ERROR")
        detail = exc.detail
        if isinstance(detail, dict):  # simplejwt's InvalidToken carries {"detail", "code", "messages"}
            detail = detail.get("detail") or next(iter(detail.values()), "")
        detail = str(detail)
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
            detail = str(detail) or "Authentication credentials were not provided."
            return Response(error_body(code, detail), status=status.HTTP_401_UNAUTHORIZED, headers=headers)
        return Response(error_body(code, str(detail)), status=exc.status_code, headers=headers)

    return None  # a bug: the middleware logs it and answers 500 INTERNAL_ERROR


def authentication_classes() -> list[type]:
    """EQUITY_ORDERS["AUTHENTICATION_CLASSES"] when set, else the host's DEFAULT_AUTHENTICATION_CLASSES.

    simplejwt's own JWTAuthentication stands for its password-bound subclass on the apps' routes
    (brokers.authentication): as it is, a validly signed token with a malformed `user_id` is a 500
    and a token outlives its user's password. A host's own subclass is kept as it is.
    """
    from rest_framework_simplejwt.authentication import JWTAuthentication

    from brokers.authentication import PasswordBoundJWTAuthentication

    names = conf.AUTHENTICATION_CLASSES
    classes = list(api_settings.DEFAULT_AUTHENTICATION_CLASSES) if names is None else \
        [import_string(name) if isinstance(name, str) else name for name in names]
    return [PasswordBoundJWTAuthentication if cls is JWTAuthentication else cls for cls in classes]


class AppViewPolicy:
    """Mixed into every view of the apps, before DRF's view class: the apps' policy, not the host's.

    Anonymous callers get 401 NOT_AUTHENTICATED whatever the order of the host's authentication
    classes: DRF sends 401 only when the first class names a `WWW-Authenticate` scheme (JWT does,
    sessions do not), so the header comes from the first class that has one; a session-only host
    gets the 401 without the header. A POST under session authentication without the CSRF token is
    403 PERMISSION_DENIED, in the envelope.
    """

    permission_classes = [IsAuthenticated]
    # DRF's JSON output, encoded by orjson (brokers.renderers); the browsable API stays.
    renderer_classes = [OrjsonJSONRenderer, BrowsableAPIRenderer]
    # JSON only, bounded in size and depth: a 1000-deep body was a RecursionError 500, and a body
    # of any size was read whole. No form or multipart parser stands beside it.
    parser_classes = [BoundedJSONParser]

    def get_authenticators(self):
        return [auth() for auth in authentication_classes()]

    def get_authenticate_header(self, request):
        for authenticator in self.get_authenticators():
            header = authenticator.authenticate_header(request)
            if header:
                return header
        return None

    def get_exception_handler(self):
        return api_exception_handler

    def dispatch(self, request, *args, **kwargs):
        # DRF renders datetimes in the current time zone; the wire is UTC with a Z whatever TIME_ZONE says.
        with timezone.override(UTC):
            return super().dispatch(request, *args, **kwargs)


def document_paths_without_trailing_slash(endpoints, **kwargs):
    """drf-spectacular preprocessing hook (optional in a host): one operation per path, without the slash.

    Every route of the apps answers with and without a trailing slash; with this hook the schema
    lists each path once, as SPEC.md writes it. Other paths pass through unchanged but for the slash.
    """
    seen, kept = set(), []
    for path_, path_regex, method, callback in endpoints:
        path_ = path_.rstrip("/") or "/"
        if (path_, method) not in seen:
            seen.add((path_, method))
            kept.append((path_, path_regex, method, callback))
    return kept
