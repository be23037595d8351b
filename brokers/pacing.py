"""Request pacing per broker key, shared by every worker through the Django cache.

Brokers count requests per key (KIS per app key, Upbit per access key's "pocket"), not per
process: four gunicorn workers that each keep their own pace send four times the broker's limit.
So the budget lives in the shared cache (Redis in production; the in-process cache when there is
none, where it is exact for the one process there is).

How a budget is kept: time is cut into slots of `1 / rate` seconds (widened by SAFETY, below). A
request claims the first free slot that starts after now with `cache.add` (atomic on Redis and on
the in-process cache: exactly one claimer per slot, whatever the process), sleeps until the
slot starts and is then sent. Sends therefore start at least one slot apart, so no one-second
window, sliding or fixed, holds more than `rate` of them. A broker that says it has little left
(Upbit's `Remaining-Req: ...; sec=0`) pushes the group's next slot to a second later (`hold`).

A request waits for its slot, at most `PACING_MAX_WAIT_SECONDS`; when no slot is free within that,
it is refused with BrokerUnavailable ("rate limit") and nothing is sent.

The cache unreachable, decided:
- an order placement (`critical=True`) is refused with ServiceUnavailable (503) before anything is
  sent: pacing nothing for an order would spend the broker's budget blindly, and an order refused
  by the broker's rate limit cannot always be sent again (KIS) — the rest of the service answers
  placements with 503 when the shared cache is down, too;
- reads and cancels keep working, paced per process (a local in-memory budget): at worst the
  workers together exceed the broker's limit, and those refusals are retried with backoff.

Keys are never stored in clear: the cache key carries a SHA-256 digest of the broker key.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time

from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache

from brokers.conf import conf
from brokers.errors import BrokerUnavailable, ServiceUnavailable

logger = logging.getLogger(__name__)

# Our clock and the broker's never agree exactly, and a send leaves some milliseconds after its
# slot starts: slots are this fraction longer than 1 / rate, so jitter does not add a request.
SAFETY = 0.2
SLOT_SCAN_LIMIT = 1000  # bounds the claims tried by one request, whatever the settings say

_clock = time.time  # wall clock: slots must mean the same instant in every process
_sleep = time.sleep  # tests replace both
_local = LocMemCache("brokers-pacing-fallback", {})  # the per-process budget when the shared cache fails
_local_lock = threading.Lock()


def key_digest(secretless_key: str) -> str:
    """A short stable digest of a broker key, for cache keys and logs."""
    return hashlib.sha256(secretless_key.encode()).hexdigest()[:32]


class Pacer:
    """One request budget: `rate` requests a second for one (broker, key, group)."""

    def __init__(self, *, broker: str, key: str, group: str, rate: float):
        if rate <= 0:
            raise ValueError("a pacing rate must be positive")
        self.broker, self.group, self.rate = broker, group, float(rate)
        self.slot_seconds = (1.0 / self.rate) * (1 + SAFETY)
        self._prefix = f"pace:{broker}:{key_digest(key)}:{group}"
        self.last_slot: int | None = None  # the slot this pacer claimed last (for logs and tests)

    def __repr__(self) -> str:
        return f"<Pacer {self._prefix} {self.rate}/s>"

    # --- the budget --------------------------------------------------------------------------

    def wait_turn(self, *, critical: bool = False) -> float:
        """Block until this request may be sent; returns the seconds waited.

        critical: an order placement. With the shared cache unreachable it is refused
        (ServiceUnavailable) instead of being paced per process.
        """
        try:
            return self._wait_turn(caches["default"])
        except (BrokerUnavailable, ServiceUnavailable):
            raise
        except Exception as exc:  # the shared cache is down (Redis refused, timed out)
            if critical:
                logger.warning("pacing cache unavailable; order not sent", extra={
                    "broker": self.broker, "group": self.group, "error": type(exc).__name__})
                raise ServiceUnavailable("The shared cache that paces broker requests is unavailable; "
                                         "the order was not sent. Retry shortly.") from exc
            logger.warning("pacing cache unavailable; pacing this process only", extra={
                "broker": self.broker, "group": self.group, "error": type(exc).__name__})
            with _local_lock:
                return self._wait_turn(_local)

    def hold(self, seconds: float) -> None:
        """The broker says the budget is spent: no request of this group starts for `seconds`."""
        until = _clock() + seconds
        for cache in (caches["default"], _local):
            try:
                current = cache.get(self._prefix + ":hold")
                if current is None or float(current) < until:
                    cache.set(self._prefix + ":hold", until, timeout=math.ceil(seconds) + 1)
                return
            except Exception:  # the shared cache is down: hold this process at least
                continue

    def _wait_turn(self, cache) -> float:
        now = _clock()
        max_wait = float(conf.PACING_MAX_WAIT_SECONDS)
        earliest = now
        hold = cache.get(self._prefix + ":hold")
        if hold is not None:
            earliest = max(earliest, float(hold))
        # Only a slot that starts after now: a slot already under way may have been sent in by
        # its owner a moment ago.
        slot = math.floor(earliest / self.slot_seconds) + 1
        hint = cache.get(self._prefix + ":last")  # advisory: where the last claim was; add() decides
        # A hint beyond the wait window was written by a clock ahead of ours (another host, or ours
        # before it stepped back): following it would refuse every request until it expires.
        if hint is not None and slot <= int(hint) < slot + max_wait / self.slot_seconds:
            slot = int(hint) + 1
        timeout = math.ceil(max_wait + 2 * self.slot_seconds) + 1
        for _ in range(SLOT_SCAN_LIMIT):
            start = slot * self.slot_seconds
            if start - now > max_wait:
                break
            if cache.add(f"{self._prefix}:{slot}", 1, timeout=timeout):
                cache.set(self._prefix + ":last", slot, timeout=timeout)
                self.last_slot = slot
                waited = max(0.0, start - _clock())
                if waited:
                    _sleep(waited)
                return waited
            slot += 1
        logger.warning("broker rate limit: no request slot free in time", extra={
            "broker": self.broker, "group": self.group, "rate": self.rate, "max_wait": max_wait})
        raise BrokerUnavailable(f"The {self.broker} rate limit ({self.rate:g} requests/s) is used up for "
                                f"{max_wait:g} s; nothing was sent. Retry shortly.")


def remaining_in_second(header: str | None) -> tuple[str | None, int | None]:
    """Upbit's `Remaining-Req: group=order; min=1800; sec=29` as (group, sec); None parts when absent."""
    group = sec = None
    for part in (header or "").split(";"):
        name, _, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if name == "group" and value:
            group = value
        elif name == "sec":
            try:
                sec = int(value)
            except ValueError:
                sec = None
    return group, sec
