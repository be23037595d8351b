"""What the API accepts as an amount (a quantity, a price, a starting cash balance).

A JSON number, or a string in plain ASCII decimal notation, `^[0-9]+(\\.[0-9]+)?$`, as Alpaca's
clients send amounts. Python's Decimal() and int() read every Unicode digit ("١", "１"), signs,
surrounding spaces and exponents; none of those is an amount here, and neither is a boolean
(a subclass of int in Python, not a number in JSON).
"""

from __future__ import annotations

import re
from decimal import Decimal

# fullmatch only: `$` would also accept a trailing newline. [0-9] is ASCII, unlike \d.
_PLAIN_DECIMAL_RE = re.compile(r"[0-9]+(\.[0-9]+)?")

NOT_AN_AMOUNT = 'Use a JSON number, or a string of ASCII digits with an optional decimal point (e.g. "0.5").'


def is_amount(value) -> bool:
    """Whether `value`, as parsed from the request, has an amount's form (its size is checked elsewhere)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return _PLAIN_DECIMAL_RE.fullmatch(value) is not None
    return isinstance(value, (int, float, Decimal))
