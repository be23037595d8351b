"""The apps' settings: one dict, `EQUITY_ORDERS`, with a documented default for every key.

Read like simplejwt's `api_settings`::

    from brokers.conf import conf
    conf.BROKER_TIMEOUT_SECONDS

A host sets only what it changes; the one key without a default is CREDENTIALS_KEYS, and a host
that leaves it out fails `manage.py check` by name (system check `brokers.E001`), never with an
AttributeError in a request. The values are re-read when a test overrides `EQUITY_ORDERS`
(`setting_changed`). This module is the only place in the apps that reads these keys.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

SETTINGS_NAME = "EQUITY_ORDERS"


@dataclass(frozen=True)
class Key:
    default: Any
    meaning: str
    parse: Callable[[Any], Any] | None = None  # turns what a host wrote into the type the apps use


def _decimal(value) -> Decimal:
    # str() first: a host that writes 0.02 (a float) gets Decimal("0.02"), not 0.0200000000000000004163.
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _keys(value) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    return [k.strip() for k in (value or []) if k and k.strip()]


def _proxy_count(value) -> int:
    count = int(value)
    if count < 0:
        raise ImproperlyConfigured(f'{SETTINGS_NAME}["TRUSTED_PROXY_COUNT"] must be 0 (no proxy) or the number of '
                                   "proxies in front.")
    return count


def _networks(value) -> tuple[str, ...]:
    entries = tuple(_keys(value))
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f'{SETTINGS_NAME}["TRUSTED_PROXIES"]: {entry!r} is not an IP address or '
                                       "network.") from None
    return entries


def _rate(value) -> str:
    """A django-ratelimit rate ("5/m", "100/h"): refused at `manage.py check`, not in a request."""
    from django_ratelimit.core import rate_re

    if not isinstance(value, str) or not rate_re.fullmatch(value):
        raise ImproperlyConfigured(f"{value!r} is not a rate such as \"5/m\" (count/period, period s, m, h or d).")
    return value


def _positive_int(value) -> int:
    number = int(value)
    if number < 1:
        raise ImproperlyConfigured(f"{value!r} must be at least 1.")
    return number


def _optional_list(value):
    return None if value is None else list(value)


REQUIRED = object()

# Every key, its default and what it does: the README's table is this one.
KEYS: dict[str, Key] = {
    "CREDENTIALS_KEYS": Key(REQUIRED, "Fernet keys that encrypt broker credentials at rest, newest first (rotation: "
                                      "prepend a new key, run `manage.py rotate_credentials`). Required.", _keys),
    "AUTHENTICATION_CLASSES": Key(None, "DRF authentication classes (dotted paths) of the apps' routes; None = the "
                                        "host's REST_FRAMEWORK DEFAULT_AUTHENTICATION_CLASSES.", _optional_list),
    "ALPACA_PAPER_URL": Key("https://paper-api.alpaca.markets", "Alpaca paper trading API base URL.", str),
    "ALPACA_LIVE_URL": Key("https://api.alpaca.markets", "Alpaca live trading API base URL.", str),
    "ALPACA_DATA_URL": Key("https://data.alpaca.markets", "Alpaca market data API base URL.", str),
    "KIS_REAL_URL": Key("https://openapi.koreainvestment.com:9443", "KIS real-account API base URL.", str),
    "KIS_MOCK_URL": Key("https://openapivts.koreainvestment.com:29443", "KIS mock-investment API base URL.", str),
    "UPBIT_URL": Key("https://api.upbit.com", "Upbit API base URL.", str),
    "BROKER_TIMEOUT_SECONDS": Key(10.0, "Timeout of every broker HTTP call, in seconds.", float),
    "BROKER_ABSENT_AFTER_SECONDS": Key(600.0, "A broker with client ids (Alpaca, Upbit, sim): how long after its last "
                                             "send a pending order that is still not found is settled as absent by "
                                             "`reconcile_orders`.", float),
    "KIS_MOCK_REQUESTS_PER_SECOND": Key(2.0, "Request pace per KIS app key on the mock (모의투자) server, shared by "
                                             "every worker through the cache.", float),
    "KIS_REAL_REQUESTS_PER_SECOND": Key(20.0, "Request pace per KIS app key on the real server.", float),
    "KIS_PAGING_RESTARTS": Key(3, "Restarts of a KIS inquiry whose pages changed while it was read.", int),
    "UPBIT_ORDER_REQUESTS_PER_SECOND": Key(12.0, "Upbit order-group pace (POST/DELETE orders) per access key.", float),
    "UPBIT_PRIVATE_REQUESTS_PER_SECOND": Key(30.0, "Upbit pace of other private calls per access key.", float),
    "PACING_MAX_WAIT_SECONDS": Key(5.0, "Longest wait of a broker request for its turn; then BROKER_UNAVAILABLE, "
                                        "nothing sent.", float),
    "TRUSTED_PROXY_COUNT": Key(0, "Proxies that append to X-Forwarded-For in front of the service; 0 = the audit "
                                  "log's client_ip is the peer address and X-Forwarded-For is ignored.",
                               _proxy_count),
    "TRUSTED_PROXIES": Key((), "Addresses or networks of those proxies (a list, or one comma-separated string); "
                               "client_ip is then the right-most X-Forwarded-For hop that is not one of them.",
                           _networks),
    "RATE_LIMIT_ORDERS": Key("30/m", "POST /orders per user (django-ratelimit rate, fixed window).", str),
    "RATE_LIMIT_LIVE_DAILY": Key(200, "Live placements per user per UTC day.", int),
    "RATE_LIMIT_LOGIN_FAILURES_PER_NAME": Key("5/m", "Failed logins per login name at the token route "
                                                     "(django-ratelimit rate, fixed window); past it 429, before "
                                                     "any password is hashed.", _rate),
    "RATE_LIMIT_LOGIN_FAILURES_PER_ADDRESS": Key("100/m", "Failed logins per client address (as TRUSTED_PROXY_COUNT "
                                                          "and TRUSTED_PROXIES resolve it; IPv6 by /64): generous, "
                                                          "many users share an office or proxy address.", _rate),
    "MAX_BODY_BYTES": Key(64 * 1024, "Largest request body the apps' routes read, in bytes; larger is 413 "
                                     "PAYLOAD_TOO_LARGE.", _positive_int),
    "MAX_JSON_DEPTH": Key(32, "Deepest nesting of arrays and objects in a request body; deeper is 400 "
                              "VALIDATION_ERROR before it is decoded.", _positive_int),
    "RISK_MAX_TRADE_RISK_PCT": Key(Decimal("0.02"), "Default fraction of equity one trade may risk.", _decimal),
    "RISK_UNPROTECTED_LOSS_PCT": Key(Decimal("0.10"), "Default assumed adverse move of an order without a stop.",
                                     _decimal),
    "RISK_DAILY_LOSS_LIMIT_PCT": Key(Decimal("0.05"), "Default daily loss, as a fraction of the day's starting "
                                                      "equity, that stops new exposure.", _decimal),
    "SIM_STARTING_CASH_USD": Key(Decimal("100000"), "Starting cash of a simulator account in USD.", _decimal),
    "SIM_STARTING_CASH_KRW": Key(Decimal("100000000"), "Starting cash of a simulator account in KRW.", _decimal),
    "EQUITY_ALERT_WEBHOOK_URL": Key(None, "JSON POST on a user's first live order; None = mail to ADMINS only.",
                                    lambda v: v or None),
    "EQUITY_ALERT_TIMEOUT_SECONDS": Key(3.0, "Timeout of the first-live-order webhook, in seconds.", float),
    "WEBHOOK_TIMEOUT_SECONDS": Key(5.0, "Connect and read timeout of one webhook delivery, in seconds.", float),
    "WEBHOOK_RETRY_HOURS": Key(24.0, "How long a failing delivery is retried; a subscription whose deliveries all "
                                     "failed that long is disabled.", float),
    "WEBHOOK_RETRY_BASE_SECONDS": Key(10.0, "First retry delay of a failed delivery; doubled each attempt (with "
                                            "jitter), at most an hour.", float),
    "WEBHOOK_ALLOW_HTTP_LOOPBACK": Key(False, "Allow plain http webhook URLs to loopback addresses (development "
                                              "only; the demo site sets it from DEBUG).", bool),
    "WEBHOOK_MAX_SUBSCRIPTIONS": Key(10, "Active webhook subscriptions per user.", int),
    "WEBHOOK_SWEEP_SECONDS": Key(5.0, "How often `push_scheduler` enqueues the sweep of due webhook deliveries "
                                      "(retries, lost tasks, dead workers).", float),
    "SYNC_INTERVAL_SECONDS": Key(10.0, "How often `push_scheduler` enqueues the broker state sync and the "
                                       "simulator's day-order expiry.", float),
    "SYNC_CONCURRENCY": Key(4, "Connections synced at once (threads); each broker's own pace still applies.", int),
    "SYNC_MAX_ORDERS_PER_CONNECTION": Key(200, "Open orders of one connection looked at per sync pass (oldest "
                                               "first).", int),
    "RECONCILE_INTERVAL_SECONDS": Key(60.0, "How often `push_scheduler` enqueues `reconcile_orders`.", float),
    "JSON_ERRORS_PATH_PREFIXES": Key(("/api/",), "Paths under which the optional "
                                                 "`brokers.middleware.ApiErrorsAsJsonMiddleware` turns Django's own "
                                                 "HTML errors into the JSON envelope.", tuple),
}


class EquityOrdersSettings:
    """`settings.EQUITY_ORDERS` over the defaults; each key parsed once, on first use."""

    def __init__(self):
        self._cache: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict:
        value = getattr(settings, SETTINGS_NAME, None) or {}
        if not isinstance(value, dict):
            raise ImproperlyConfigured(f"{SETTINGS_NAME} must be a dict.")
        return value

    def __getattr__(self, name: str):
        if name.startswith("_") or name not in KEYS:
            raise AttributeError(f"{SETTINGS_NAME} has no key {name!r}")
        if name not in self._cache:
            key = KEYS[name]
            if name in self.user_settings:
                value = self.user_settings[name]
                value = key.parse(value) if key.parse else value
            else:
                value = key.default
            if key.default is REQUIRED and (value is REQUIRED or not value):
                raise ImproperlyConfigured(f'{SETTINGS_NAME}["{name}"] is required: {key.meaning}')
            self._cache[name] = value
        return self._cache[name]

    def reload(self) -> None:
        self._cache.clear()


conf = EquityOrdersSettings()


def _reload_on_change(*, setting, **kwargs):
    if setting == SETTINGS_NAME:
        conf.reload()


setting_changed.connect(_reload_on_change, dispatch_uid="brokers.conf.reload")


@register()
def check_equity_orders_settings(app_configs, **kwargs):
    """`manage.py check` names what is missing or wrong, before the first request does."""
    from cryptography.fernet import Fernet

    try:
        user = conf.user_settings
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="brokers.E003")]
    errors = []
    unknown = sorted(set(user) - set(KEYS))
    if unknown:
        errors.append(Warning(f"{SETTINGS_NAME} has unknown keys (ignored): {', '.join(unknown)}.",
                              hint=f"The keys are: {', '.join(KEYS)}.", id="brokers.W001"))
    for name in sorted(set(user) & set(KEYS)):
        parse = KEYS[name].parse
        if parse is None or name == "CREDENTIALS_KEYS":
            continue
        try:
            parse(user[name])
        except (ImproperlyConfigured, TypeError, ValueError, ArithmeticError) as exc:
            errors.append(Error(f'{SETTINGS_NAME}["{name}"] cannot be used: {exc}', id="brokers.E004"))
    keys = _keys(user.get("CREDENTIALS_KEYS"))
    if not keys:
        errors.append(Error(f'{SETTINGS_NAME}["CREDENTIALS_KEYS"] is missing: the apps need at least one Fernet key '
                            "to encrypt broker credentials.",
                            hint="Make one with `python -c \"from cryptography.fernet import Fernet; "
                                 "print(Fernet.generate_key().decode())\"` and keep it secret, newest first.",
                            id="brokers.E001"))
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except ValueError:
            # The message names the position, never the value.
            errors.append(Error(f'{SETTINGS_NAME}["CREDENTIALS_KEYS"]: key {position} is not a Fernet key '
                                "(32 url-safe base64-encoded bytes).", id="brokers.E002"))
    return errors
