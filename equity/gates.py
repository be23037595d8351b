"""Gates 1 and 2 of POST /orders: feature flags and rate limits. Each raises or returns None.

And the rows gates 3 and 4 judge, read in one statement (`read_for_placement`): the connection,
the user's RiskProfile and the kill switches covering the placement.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import caches
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest
from django_ratelimit.core import get_usage
from waffle import flag_is_active
from waffle.models import Flag

from brokers.conf import conf
from brokers.models import BrokerAccount, TraderProfile
from brokers.types import Environment
from brokers.errors import (FeatureDisabled, LiveDailyLimitExceeded, LiveNotEnabled, RateLimitExceeded,
                               ServiceUnavailable)
from risk.models import KillSwitch, RiskProfile

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


# --- gates 3 and 4: their rows in one statement ------------------------------------------------

@dataclass(frozen=True)
class PlacementRows:
    """What gates 3 and 4 judge, read together: the user's connection for the asset class and
    environment (None: there is none, gate 3 refuses), their RiskProfile (None: none, the defaults
    apply) and the kill switches covering the placement at `now`, in id order."""

    connection: BrokerAccount | None
    profile: RiskProfile | None
    kill_switches: tuple[KillSwitch, ...]


class _Part:
    """One model's concrete columns in the statement, with the converters the ORM applies to them."""

    def __init__(self, model, alias: str, conn):
        self.model = model
        self.alias = alias
        self.fields = tuple(model._meta.concrete_fields)
        self.attnames = [f.attname for f in self.fields]
        self.pk_index = self.fields.index(model._meta.pk)  # NULL there: the LEFT JOIN found no row
        quote = conn.ops.quote_name
        self.select = ", ".join(f"{alias}.{quote(f.column)}" for f in self.fields)
        # Exactly what SQLCompiler.get_converters collects for a plain column: the backend's, then the field's.
        self.converters = []
        for i, f in enumerate(self.fields):
            col = f.get_col(model._meta.db_table)
            found = conn.ops.get_db_converters(col) + col.get_db_converters(conn)
            if found:
                self.converters.append((i, found, col))

    def instance(self, values, conn):
        values = list(values)
        for i, converters, col in self.converters:
            for converter in converters:
                values[i] = converter(values[i], col, conn)
        return self.model.from_db(conn.alias, self.attnames, values)


class _Statement:
    """The statement of read_for_placement for one database connection; names from the models' _meta."""

    def __init__(self, conn):
        q = conn.ops.quote_name
        self.connection = _Part(BrokerAccount, "c", conn)
        self.profile = _Part(RiskProfile, "p", conn)
        self.switch = _Part(KillSwitch, "k", conn)
        account, profile, switch = BrokerAccount._meta, RiskProfile._meta, KillSwitch._meta
        c_user, c_asset, c_env = (q(account.get_field(n).column) for n in ("user", "asset_class", "environment"))
        k_user, k_asset, k_until = (q(switch.get_field(n).column) for n in ("user", "asset_class", "until"))
        # The kill switches' join condition is KillSwitch.objects.covering(...): in force at `now`
        # (no `until`, or `until` after now), the user's or global, for all asset classes or this one.
        self.sql = (
            f"SELECT {self.connection.select}, {self.profile.select}, {self.switch.select} "
            f"FROM {q(account.db_table)} c "
            f"LEFT JOIN {q(profile.db_table)} p ON p.{q(profile.get_field('user').column)} = c.{c_user} "
            f"LEFT JOIN {q(switch.db_table)} k ON (k.{k_user} = c.{c_user} OR k.{k_user} IS NULL) "
            f"AND (k.{k_asset} = %s OR k.{k_asset} = %s) AND (k.{k_until} IS NULL OR k.{k_until} > %s) "
            f"WHERE c.{c_user} = %s AND c.{c_asset} = %s AND c.{c_env} = %s "
            f"ORDER BY k.{q(switch.pk.column)}")
        self.widths = (len(self.connection.fields), len(self.profile.fields), len(self.switch.fields))


# Per connection object (one per thread and alias): its backend's converters are bound to it.
_statements: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def read_for_placement(*, user_id: int, asset_class: str, live: bool, now: datetime) -> PlacementRows:
    """Gates 3 and 4's rows in one statement (a placement's hot path: raw SQL, names and values
    through the models' fields, so they are stored and read exactly as the ORM does).

    The connection row (BotRegistry.connection_for_user's), LEFT JOINed to the user's RiskProfile
    (RiskManager.for_user's) and to the switches covering the placement at `now`
    (KillSwitch.objects.covering's): one row per covering switch, none when there is no
    connection, which is gate 3's refusal whatever switch is set. Read at every placement, never
    cached: a deleted connection or a new switch applies to the next order.
    """
    conn = connections[DEFAULT_DB_ALIAS]  # this thread's connection (django.db.connection is a proxy to it)
    statement = _statements.get(conn)
    if statement is None:
        statement = _statements[conn] = _Statement(conn)
    environment = Environment.LIVE if live else Environment.PAPER
    switch, account = KillSwitch._meta, BrokerAccount._meta
    params = [
        switch.get_field("asset_class").get_db_prep_value("", conn),  # "" = every asset class
        switch.get_field("asset_class").get_db_prep_value(str(asset_class), conn),
        switch.get_field("until").get_db_prep_value(now, conn),
        account.get_field("user").get_db_prep_value(user_id, conn),
        account.get_field("asset_class").get_db_prep_value(str(asset_class), conn),
        account.get_field("environment").get_db_prep_value(str(environment), conn),
    ]
    with conn.cursor() as cursor:
        cursor.execute(statement.sql, params)
        rows = cursor.fetchall()
    if not rows:
        return PlacementRows(None, None, ())
    n_conn, n_prof, _ = statement.widths
    first = rows[0]
    connection = statement.connection.instance(first[:n_conn], conn)
    profile_values = first[n_conn:n_conn + n_prof]
    profile = None if profile_values[statement.profile.pk_index] is None else \
        statement.profile.instance(profile_values, conn)
    switch_pk = n_conn + n_prof + statement.switch.pk_index
    switches = tuple(statement.switch.instance(row[n_conn + n_prof:], conn) for row in rows
                     if row[switch_pk] is not None)
    return PlacementRows(connection, profile, switches)
