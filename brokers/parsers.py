"""The one request-body parser of the apps' routes: JSON, bounded in size and in nesting depth.

DRF's JSONParser hands the whole stream to `json.load`: a body of any size is read, and 2 KB of
brackets nested 1000 deep raise RecursionError, which escapes as a 500 (logged at ERROR, mailed to
ADMINS) before anyone has logged in. Here a body over EQUITY_ORDERS["MAX_BODY_BYTES"] is 413 without being read past
the limit, and one nested deeper than MAX_JSON_DEPTH is a 400 VALIDATION_ERROR before it is
decoded. The apps' bodies are orders and broker connections: two or three levels, well under 2 KB.
"""

from __future__ import annotations

import codecs
import re

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils import json

from brokers.conf import conf
from brokers.errors import PayloadTooLarge

# A JSON string (escapes included) and the four bracket characters outside strings. Both
# alternatives start with a distinct character, so the scan is linear in the body's length.
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def nesting_depth_exceeds(text: str, limit: int) -> bool:
    """Whether any array or object in `text` is nested more than `limit` levels deep.

    Counted without decoding, so a hostile body never reaches a recursive decoder. Brackets inside
    strings do not count; an unbalanced or unterminated body is left for the decoder to refuse.
    """
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                return True
        elif token in "]}":
            depth -= 1
    return False


class BoundedJSONParser(JSONParser):
    """JSON bodies of at most EQUITY_ORDERS["MAX_BODY_BYTES"] bytes and ["MAX_JSON_DEPTH"] levels."""

    def parse(self, stream, media_type=None, parser_context=None):
        max_bytes = conf.MAX_BODY_BYTES
        max_depth = conf.MAX_JSON_DEPTH
        request = (parser_context or {}).get("request")
        declared = _declared_length(request)
        if declared is not None and declared > max_bytes:
            raise PayloadTooLarge(_too_large(max_bytes))
        raw = stream.read(max_bytes + 1) if stream is not None else b""
        if len(raw) > max_bytes:
            raise PayloadTooLarge(_too_large(max_bytes))
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            codecs.lookup(encoding)
            text = raw.decode(encoding)
        except (LookupError, UnicodeDecodeError) as exc:
            raise ParseError(f"JSON parse error - the body is not valid {encoding}.") from exc
        if nesting_depth_exceeds(text, max_depth):
            raise ParseError(f"JSON parse error - nested deeper than {max_depth} levels.")
        try:
            return json.loads(text) if self.strict else json.loads(text, parse_constant=None)
        except RecursionError as exc:  # cannot happen below the depth limit; never a 500 if it does
            raise ParseError(f"JSON parse error - nested deeper than {max_depth} levels.") from exc
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc


def _declared_length(request) -> int | None:
    meta = getattr(request, "META", None) or {}
    try:
        return int(meta.get("CONTENT_LENGTH") or 0) or None
    except (TypeError, ValueError):
        return None


def _too_large(max_bytes: int) -> str:
    return f"The request body is larger than {max_bytes} bytes."
