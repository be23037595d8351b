"""Market sessions per asset class (SPEC.md, RiskManager v2 "Market hours").

us_equity follows the NYSE calendar (XNYS), kr_equity the KRX calendar (XKRX), both from
exchange_calendars; crypto never closes. Every time in and out is aware UTC; a session is open
from its open (included) to its close (excluded), like the library's default side "left".

How the calendars are held (notes/pitfalls.md, exchange_calendars):

- Built lazily, at most once per process and code, under a per-code lock (XKRX takes ~2 s).
- Each build covers two years back to one year ahead of the day it is built (the library's own
  horizon). The library computes its default bounds once, at import, so we always pass explicit
  bounds. When an `at` comes within REBUILD_MARGIN of the last session of a calendar built on an
  earlier day, the calendar is rebuilt (a long-running worker never walks off its end).
- A time outside the built range (before its first session, or a session or next open beyond its
  last session) raises CalendarUnavailable: a DomainError rendered as 503 SERVICE_UNAVAILABLE
  with a detail naming the calendar and its range. We chose 503 over MARKET_CLOSED because the
  service cannot tell whether the market is open: it is our dependency that cannot answer, and
  the order is not sent. It is never a 500.

Exchange facts the library models and we rely on (tested in tests/risk/test_market_calendars.py):
KRX's first trading day of the year opens at 10:00 KST, and Dec 31 is closed. The library does
not know the recent college entrance exam days (수능: trading 10:00-16:30 KST instead of
09:00-15:30), so SESSION_OVERRIDES below sets them; add each year's date when the Ministry of
Education announces it (it is announced more than a year ahead).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from brokers.errors import ServiceUnavailable

UTC = timezone.utc

# asset_class -> exchange_calendars code; None = never closes.
CALENDAR_CODES: dict[str, str | None] = {
    "us_equity": "XNYS",
    "kr_equity": "XKRX",
    "crypto": None,
}

# Session times that differ from what exchange_calendars says, in the exchange's local time.
# Only adjusts days that the library already has as sessions.
KST = ZoneInfo("Asia/Seoul")
SESSION_OVERRIDES: dict[str, dict[date, tuple[time, time]]] = {
    "XKRX": {
        # 수능 (College Scholastic Ability Test): KRX opens and closes one hour late.
        date(2025, 11, 13): (time(10, 0), time(16, 30)),  # 2026학년도 수능 (announced; Segye 2025-11-11)
        date(2026, 11, 19): (time(10, 0), time(16, 30)),  # 2027학년도 수능 (Ministry of Education, 2024-08)
        date(2027, 11, 18): (time(10, 0), time(16, 30)),  # 2028학년도 수능 (Ministry of Education, MBC)
    },
}
_OVERRIDE_TZ: dict[str, ZoneInfo] = {"XKRX": KST}

HISTORY = timedelta(days=2 * 366)  # how far back a build reaches
REBUILD_MARGIN = timedelta(days=30)  # rebuild when `at` comes this close to the last session


class CalendarUnavailable(ServiceUnavailable):
    """The exchange calendar cannot answer for this time (outside the range it was built for)."""

    default_detail = "The market calendar cannot tell whether the market is open at this time."


@dataclass(frozen=True)
class Session:
    """One trading session: open (included) to close (excluded), aware UTC."""

    open: datetime
    close: datetime

    def contains(self, at: datetime) -> bool:
        return self.open <= at < self.close


@dataclass(frozen=True)
class _Built:
    calendar: object  # exchange_calendars.ExchangeCalendar
    built_on: date  # UTC day of the build
    first_session: date
    last_session: date


_built: dict[str, _Built] = {}
_locks: dict[str, threading.Lock] = {code: threading.Lock() for code in CALENDAR_CODES.values() if code}


# --- public API -------------------------------------------------------------------------------

def calendar_code(asset_class: str) -> str | None:
    """"XNYS" for us_equity, "XKRX" for kr_equity, None for crypto (never closes).

    An unknown asset class raises ValueError (a programming error, not a client's).
    """
    try:
        return CALENDAR_CODES[str(asset_class)]
    except KeyError:
        raise ValueError(f"unknown asset class {asset_class!r}") from None


def is_open(asset_class: str, at: datetime) -> bool:
    """Whether the asset class's market is in session at `at` (open included, close excluded)."""
    code = calendar_code(asset_class)
    at = _aware_utc(at)
    if code is None:
        return True
    return _session(code, at).contains(at)


def next_open(asset_class: str, at: datetime) -> datetime:
    """The next session open strictly after `at`, aware UTC.

    While closed, that is when the market opens next; while open, the open of the following
    session. Crypto never closes: `at` itself.
    """
    code = calendar_code(asset_class)
    at = _aware_utc(at)
    if code is None:
        return at
    session = _session(code, at)
    if at < session.open:
        return session.open
    return _session(code, session.close).open


def session_close(asset_class: str, at: datetime) -> datetime:
    """The close of the session open at `at`, else of the next session, aware UTC.

    Crypto: the next UTC midnight (the end of the UTC day, at 00:00 exactly: the following one).
    """
    return current_or_next_session(asset_class, at).close


def current_or_next_session(asset_class: str, at: datetime) -> Session:
    """The session open at `at`, else the next one. Crypto: the UTC day containing `at`."""
    code = calendar_code(asset_class)
    at = _aware_utc(at)
    if code is None:
        day_start = datetime.combine(at.date(), time(0), tzinfo=UTC)
        return Session(open=day_start, close=day_start + timedelta(days=1))
    return _session(code, at)


def reset_calendars() -> None:
    """Forget every built calendar (tests; the next call rebuilds)."""
    for code, lock in _locks.items():
        with lock:
            _built.pop(code, None)


# --- internals --------------------------------------------------------------------------------

def _aware_utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("market calendar times must be timezone-aware")
    return at.astimezone(UTC)


def _today_utc() -> date:
    return datetime.now(UTC).date()


def _needs_rebuild(built: _Built, at: datetime) -> bool:
    # Only a calendar built on an earlier day can reach further by being rebuilt.
    return built.built_on < _today_utc() and at.date() >= built.last_session - REBUILD_MARGIN


def _get(code: str, at: datetime) -> _Built:
    built = _built.get(code)
    if built is not None and not _needs_rebuild(built, at):
        return built
    with _locks[code]:
        built = _built.get(code)
        if built is None or _needs_rebuild(built, at):
            built = _build(code)
            _built[code] = built
    return built


def _build(code: str) -> _Built:
    import exchange_calendars as xc  # heavy (pandas): imported on first use only
    import pandas as pd

    today = _today_utc()
    start = pd.Timestamp(today - HISTORY)
    end = pd.Timestamp(today) + pd.DateOffset(years=1)
    cal = xc.get_calendar(code, start=start, end=end)
    return _Built(calendar=cal, built_on=today,
                  first_session=cal.first_session.date(), last_session=cal.last_session.date())


def _out_of_range(code: str, built: _Built, at: datetime) -> CalendarUnavailable:
    return CalendarUnavailable(
        f"market_hours: the {code} calendar covers sessions from {built.first_session.isoformat()} "
        f"to {built.last_session.isoformat()}; it cannot tell whether the market is open at "
        f"{iso_z(at)}. No order was sent.")


def _session(code: str, at: datetime) -> Session:
    """The session of `code` open at `at`, else the next one (overrides applied)."""
    import pandas as pd

    built = _get(code, at)
    cal = built.calendar
    local_day = at.astimezone(ZoneInfo(str(cal.tz))).date()
    if local_day < built.first_session:
        raise _out_of_range(code, built, at)
    day = local_day
    # Sessions of XNYS and XKRX never span midnight: at most the day's session and the next.
    for _ in range(3):
        if day > built.last_session:
            raise _out_of_range(code, built, at)
        label = cal.date_to_session(pd.Timestamp(day), direction="next")
        session = _session_times(code, cal, label)
        if at < session.close:
            return session
        day = label.date() + timedelta(days=1)
    raise _out_of_range(code, built, at)  # pragma: no cover - unreachable for day sessions


def _session_times(code: str, cal, label) -> Session:
    override = SESSION_OVERRIDES.get(code, {}).get(label.date())
    if override is not None:
        tz = _OVERRIDE_TZ[code]
        open_local, close_local = override
        return Session(open=datetime.combine(label.date(), open_local, tzinfo=tz).astimezone(UTC),
                       close=datetime.combine(label.date(), close_local, tzinfo=tz).astimezone(UTC))
    return Session(open=cal.session_open(label).to_pydatetime().astimezone(UTC),
                   close=cal.session_close(label).to_pydatetime().astimezone(UTC))


def iso_z(at: datetime) -> str:
    """ISO-8601 UTC with a Z, as the spec writes times in details (2026-11-27T14:30:00Z)."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
