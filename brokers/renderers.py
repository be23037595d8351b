"""The apps' JSON renderer: DRF's JSONRenderer, byte for byte, with orjson doing the encoding.

DRF's renderer encodes with the standard library and calls its encoder's Python `default()` for
every Decimal and datetime, which a list of 20 orders has a hundred of. orjson encodes the same
structures in C. Its output is the same bytes as `json.dumps(..., separators=(",", ":"),
ensure_ascii=False, allow_nan=False)` (DRF's settings as the apps run them: COMPACT_JSON,
UNICODE_JSON and STRICT_JSON on, their defaults) except in these places, each handled here:

- Decimal (our amounts, COERCE_DECIMAL_TO_STRING off): DRF writes `float(d)` with the standard
  library's float repr (`1e-05`), orjson writes its own (`0.00001`). Decimals go to `_default`,
  which writes Python's repr as a raw fragment; a NaN or infinite one raises ValueError as DRF does.
- A native float: orjson's text differs from Python's repr only when Python writes an exponent
  (`1e+16`, `1e-07`, `1e-05`); orjson then writes `1e16`, `1e-7`, `0.00001`. An output holding a
  number that looks like one of those (`orjson_float_may_differ`; a string that happens to contain
  such text only costs a second rendering) is rendered again by DRF's renderer.
- U+2028 and U+2029 are escaped (DRF does it after encoding; so do we).
- datetime, date, time, dataclasses and everything else orjson does not take natively go to DRF's
  own encoder (`encoders.JSONEncoder.default`), so their text is DRF's.
- Whatever orjson refuses (a non-str dict key, an integer beyond 64 bits, a lone surrogate, a type
  nobody knows) is rendered by DRF's renderer: its answer, or its exception, is DRF's.
- An indented rendering (`Accept: application/json; indent=4`, the browsable API's own view of
  the content) or a host that turned COMPACT_JSON / UNICODE_JSON / STRICT_JSON off: DRF's renderer.

Left different on purpose: a native float NaN or infinity is `null` here where DRF raises
ValueError (a 500); an `enum.Enum` member that is not also a str or int is its value here where
DRF raises TypeError. Neither is in any of the apps' responses (amounts are Decimal, and the few
floats in metadata come from finite Decimals).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

import orjson
from rest_framework.renderers import JSONRenderer
from rest_framework.utils import encoders

_drf_default = encoders.JSONEncoder().default
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
# Where orjson writes a float as Python does not (the only such places, tests/api/test_renderer.py):
# an exponent without its sign (`1e16`, Python `1e+16`) or of one digit (`1e-7`, Python `1e-07`),
# both at the end of a number (before `,` `}` `]` or the end), and fixed notation in [1e-5, 1e-4)
# (`0.00001`, Python `1e-05`). Python's own forms, which the Decimals are written in, match
# neither. Both searches start from a literal, so they cost ~0.02 ms on a page of 20 orders
# (a pattern starting from `[:,[]` cost 0.09 ms, as much as the encoding saved).
_ORJSON_EXPONENT = re.compile(rb"e(?:[0-9]+|-[0-9])(?:[,}\]]|\Z)")
_ORJSON_SMALL_FIXED = re.compile(rb"(?:^|[-:,\[])0\.0000[1-9]")


def orjson_float_may_differ(out: bytes) -> bool:
    """True when orjson's output may hold a float written otherwise than Python writes it (a string that
    merely looks so only costs a second rendering)."""
    return bool(_ORJSON_EXPONENT.search(out)) or (b"0.0000" in out and bool(_ORJSON_SMALL_FIXED.search(out)))


def _default(obj):
    if isinstance(obj, Decimal):
        number = float(obj)
        if not math.isfinite(number):
            raise ValueError(f"Out of range float values are not JSON compliant: {obj!r}")
        return orjson.Fragment(float.__repr__(number))
    return _drf_default(obj)


class OrjsonJSONRenderer(JSONRenderer):
    """Same media type, format and output as DRF's JSONRenderer (it is one); the encoding in C."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        # DRF's settings as DRF's renderer holds them: only the compact, unicode, strict rendering
        # is orjson's to do.
        if data is None or not self.compact or self.ensure_ascii or not self.strict or \
                self.get_indent(accepted_media_type, renderer_context or {}) is not None:
            return super().render(data, accepted_media_type, renderer_context)
        try:
            out = orjson.dumps(data, default=_default, option=_OPTIONS)
        except (orjson.JSONEncodeError, TypeError, ValueError):
            return super().render(data, accepted_media_type, renderer_context)
        if orjson_float_may_differ(out):
            return super().render(data, accepted_media_type, renderer_context)
        if b"\xe2\x80\xa8" in out or b"\xe2\x80\xa9" in out:
            out = out.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
        return out
