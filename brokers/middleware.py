"""Optional: every answer under the API's paths is JSON with the error envelope, whatever Django renders.

Django answers some failures before or outside DRF (an unroutable path, CSRF on a non-DRF view,
an unhandled exception, a database that went away): under the paths of
EQUITY_ORDERS["JSON_ERRORS_PATH_PREFIXES"] (default `/api/`) they become {"code", "detail"}.
The standalone demo site uses it; a host adds it to MIDDLEWARE only if it wants the same for its
own paths (the apps' own routes answer in the envelope without it).
"""

from __future__ import annotations

import logging

from django.http import JsonResponse

from brokers.api import is_database_outage
from brokers.conf import conf

logger = logging.getLogger("equity.errors")

_STATUS_CODES = {400: "BAD_REQUEST", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
                 500: "INTERNAL_ERROR"}


def _under_the_api(request) -> bool:
    return request.path.startswith(tuple(conf.JSON_ERRORS_PATH_PREFIXES))


class ApiErrorsAsJsonMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code < 400 or not _under_the_api(request):
            return response
        content_type = response.get("Content-Type", "")
        if content_type.startswith("application/json") or (
                content_type.startswith("text/html") and getattr(response, "renderer_context", None)):
            return response  # DRF already rendered the envelope (JSON, or the browsable API's HTML)
        code = _STATUS_CODES.get(response.status_code, "ERROR")
        detail = {404: "No such route.", 405: "Method not allowed."}.get(response.status_code,
                                                                         "The request could not be processed.")
        if response.status_code == 403:
            detail = "Forbidden (CSRF check failed or not allowed)."
        return JsonResponse({"code": code, "detail": detail}, status=response.status_code)

    def process_exception(self, request, exception):
        if not _under_the_api(request):
            return None
        if is_database_outage(exception):
            logger.warning("database unavailable on %s: %s", request.path, exception.__class__.__name__)
            return JsonResponse({"code": "SERVICE_UNAVAILABLE",
                                 "detail": "The database is unavailable; retry shortly."}, status=503)
        logger.exception("unhandled error on %s", request.path)
        return JsonResponse({"code": "INTERNAL_ERROR", "detail": "An unexpected error occurred."}, status=500)
