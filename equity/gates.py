"""Gates 1 and 2 of POST /orders: feature flags and rate limits. Each raises or returns None."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest
from django_ratelimit.core import get_usage
from waffle import flag_is_active
from waffle.models import Flag

from brokers.conf import conf
from brokers.models import TraderProfile
from brokers.errors import (FeatureDisabled, LiveDailyLimitExceeded, LiveNotEnabled, RateLimitExceeded,
                               ServiceUnavailable)

logger = logging.getLogger(__name__)

PAPER_FLAG = "FEATURE_EQUITY_PAPER"
LIVE_FLAG = "FEATURE_EQUITY_LIVE"
RATE_GROUP = "equity.orders.post"


def _request_for(user, http_request: HttpRequest | None) -> HttpRequest:
    if http_request is not None:
        return http_request
    request = HttpRequest()
    request.user = user
    request.method = "POST"
    return request


def _flag_on(name: str, user, http_request: HttpRequest | None) -> bool:
    request = _request_for(user, http_request)
    try:
        return bool(flag_is_active(request, name))
    except Exception:  # the flag cache (Redis) is down: SPEC says flags are then read from the database
        logger.warning("flag cache unavailable; reading %s from the database", name)
        flag = Flag.objects.filter(name=name).first()
        if flag is None:
            return False
        if flag.everyone is not None:
            return flag.everyone
        if flag.superusers and user.is_superuser or flag.staff and user.is_staff or flag.authenticated:
            return True
        return flag.users.filter(pk=user.pk).exists() or flag.groups.filter(user=user).exists()


def check_flags(*, user, live: bool, http_request: HttpRequest | None = None) -> None:
    """Gate 1. Paper needs FEATURE_EQUITY_PAPER; live needs FEATURE_EQUITY_LIVE and the user's live_enabled."""
    if not live:
        if not _flag_on(PAPER_FLAG, user, http_request):
            raise FeatureDisabled("Paper trading is disabled (feature flag FEATURE_EQUITY_PAPER is off).")
        return
    if not _flag_on(LIVE_FLAG, user, http_request):
        raise FeatureDisabled("Live trading is disabled (feature flag FEATURE_EQUITY_LIVE is off).")
    if not TraderProfile.objects.filter(user=user, live_enabled=True).exists():
        raise LiveNotEnabled("Live trading is not enabled for your account; an operator must enable it.")


def check_rate(*, user, live: bool, http_request: HttpRequest | None = None, count: bool = True) -> dict:
    """Gate 2. Counts every request that reaches it, whatever happens to it later.

    count=False (a what-if) only reads the counters: it raises what the next placement would get
    and counts nothing. Returns the numbers: remaining placements in the window and the seconds to
    its end, and for live orders the same of the UTC day.
    """
    unavailable = ServiceUnavailable("Rate limiting is unavailable; no order was sent. Retry shortly.")
    try:
        usage = get_usage(_request_for(user, http_request), group=RATE_GROUP, key=lambda group, request: str(user.pk),
                          rate=conf.RATE_LIMIT_ORDERS, increment=count)
    except Exception as exc:
        logger.warning("rate-limit cache unavailable: %s", exc.__class__.__name__)
        raise unavailable from exc
    numbers = {"limit": None, "remaining": None, "reset_in_seconds": None}
    if usage is not None:
        if usage["time_left"] < 0 and usage["should_limit"]:  # django-ratelimit's sign that the cache failed
            raise unavailable
        used = usage["count"] if count else usage["count"] + 1  # with this request
        retry = max(1, usage["time_left"])
        numbers = {"limit": usage["limit"], "remaining": max(0, usage["limit"] - used), "reset_in_seconds": retry}
        if used > usage["limit"]:
            raise RateLimitExceeded(f"More than {conf.RATE_LIMIT_ORDERS} order requests; retry in {retry} s.",
                                    headers={"Retry-After": str(retry)})
    if live:
        numbers.update(_count_live_today(user, count=count))
    return numbers


def _count_live_today(user, *, count: bool = True) -> dict:
    now = datetime.now(UTC)
    key = f"equity:live-daily:{user.pk}:{now:%Y-%m-%d}"
    cache = caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]  # django-ratelimit's own setting, its default
    try:
        if count:
            cache.add(key, 0, timeout=2 * 24 * 3600)
            used = cache.incr(key)
        else:
            used = int(cache.get(key, 0)) + 1
    except Exception as exc:
        logger.warning("live daily counter unavailable: %s", exc.__class__.__name__)
        raise ServiceUnavailable("Rate limiting is unavailable; no order was sent. Retry shortly.") from exc
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    retry = max(1, int((midnight - now).total_seconds()))
    if used > conf.RATE_LIMIT_LIVE_DAILY:
        raise LiveDailyLimitExceeded(
            f"The daily cap of {conf.RATE_LIMIT_LIVE_DAILY} live orders is reached; it resets at 00:00 UTC.",
            headers={"Retry-After": str(retry)})
    return {"live_daily_limit": conf.RATE_LIMIT_LIVE_DAILY,
            "live_daily_remaining": max(0, conf.RATE_LIMIT_LIVE_DAILY - used),
            "live_daily_reset_in_seconds": retry}
