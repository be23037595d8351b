"""Failed logins, limited per login name and per client address, on the shared cache.

Without a limit, 100 wrong passwords for one user were 100 x 401 and the right one still worked,
and a few threads of logins slowed every other request down (each attempt hashes a password).
Each attempt takes one slot of two django-ratelimit fixed-window budgets before any password is
hashed: the client address's (generous: an office or a proxy puts many users behind one address)
and the login name's (a few a minute). A spent budget is 429 RATE_LIMIT_EXCEEDED with
Retry-After. Only a failed password check keeps its slots: a login that succeeds, or an attempt
refused by the limit itself, gives them back, so a busy client is never locked out by its own
users, and a locked name costs an attacker nothing but 429s.

Taking the slot first (django-ratelimit's atomic add/incr) is what makes the limit exact across
workers: of 40 concurrent wrong passwords for one name under `5/m`, exactly 5 are checked.
"""

from __future__ import annotations

import ipaddress
import logging
import unicodedata
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django_ratelimit import ALL
from django_ratelimit.core import _get_window, _make_cache_key, _split_rate, get_usage

from audit.services import client_ip_of
from brokers.conf import conf
from brokers.errors import RateLimitExceeded, ServiceUnavailable

logger = logging.getLogger(__name__)

NAME_GROUP = "auth.login.failures.name"
ADDRESS_GROUP = "auth.login.failures.address"


@dataclass(frozen=True)
class Slot:
    """One counted attempt in one budget's current window; `cache_key` None: not given back."""

    cache_key: str | None


def login_name_key(login) -> str:
    """The budget key of a login name: one budget however its case or Unicode form is written."""
    return unicodedata.normalize("NFKC", str(login)).casefold().strip()


def client_address(request) -> str:
    """The client's address as the audit log records it (audit.services.client_ip_of: the peer,
    or behind the configured trusted proxies the first hop they vouch for), an IPv6 client by its
    /64 network as django-ratelimit's `ip` key counts.

    Never a client-written X-Forwarded-For, which would hand every attempt a fresh budget. A
    request without an address (a Unix socket, an in-process test transport) shares one budget
    with every other such request rather than escaping the limit.
    """
    address = client_ip_of(request.META)
    if address is None:
        return "no-peer-address"
    peer = ipaddress.ip_address(address)
    bits = getattr(settings, "RATELIMIT_IPV6_MASK", 64) if peer.version == 6 else \
        getattr(settings, "RATELIMIT_IPV4_MASK", 32)
    return str(ipaddress.ip_network(f"{peer}/{bits}", strict=False).network_address)


def take_login_slots(request, login) -> list[Slot]:
    """Counts one login attempt against both budgets, address first; raises when either is spent.

    Raises RateLimitExceeded (429, Retry-After) with nothing counted, or ServiceUnavailable (503)
    when the shared cache cannot count: no password is checked that cannot be counted.
    """
    taken: list[Slot] = []
    budgets = [(ADDRESS_GROUP, conf.RATE_LIMIT_LOGIN_FAILURES_PER_ADDRESS, client_address(request),
                "from this address"),
               (NAME_GROUP, conf.RATE_LIMIT_LOGIN_FAILURES_PER_NAME, login_name_key(login),
                "for this login")]
    for group, rate, value, whose in budgets:
        slot, usage = _take(request, group=group, rate=rate, value=value)
        if usage is None:  # RATELIMIT_ENABLE = False
            continue
        taken.append(slot)
        if usage["should_limit"]:
            give_back(taken)
            if usage["time_left"] < 0:  # django-ratelimit's sign that the cache failed (it fails closed)
                raise _unavailable()
            # django-ratelimit's window still holds at its last second (time_left 0): the next
            # attempt can count only one second after that.
            retry = usage["time_left"] + 1
            raise RateLimitExceeded(f"Too many failed logins {whose}; retry in {retry} s.",
                                    headers={"Retry-After": str(retry)})
    return taken


def give_back(slots: list[Slot]) -> None:
    """Uncounts the attempt (a login that succeeded); a cache error here only logs: the login stands."""
    cache = caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]  # django-ratelimit's own setting
    for slot in slots:
        if slot.cache_key is None:
            continue
        try:
            cache.decr(slot.cache_key)
        except ValueError:  # the window's entry expired meanwhile: nothing left to give back
            pass
        except Exception as exc:
            logger.warning("login throttle: could not give a slot back: %s", exc.__class__.__name__)


def _take(request, *, group: str, rate: str, value: str):
    # The cache key of the slot, computed as django-ratelimit 4.1 computes it inside get_usage
    # (django_ratelimit.core._get_window/_make_cache_key), so the slot can be given back. A window
    # that turns during the call leaves the key unknown: that slot is simply kept.
    _, period = _split_rate(rate)
    window = _get_window(value, period)
    try:
        usage = get_usage(request, group=group, key=lambda _group, _request: value, rate=rate, increment=True)
    except Exception as exc:
        logger.warning("login throttle: rate-limit cache unavailable: %s", exc.__class__.__name__)
        raise _unavailable() from exc
    same_window = _get_window(value, period) == window
    return Slot(_make_cache_key(group, window, rate, value, ALL) if same_window else None), usage


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("Login is unavailable: failed logins cannot be counted right now. Retry shortly.")
