"""brokers/calendars.py: sessions per asset class from exchange_calendars, plus our overrides.

The calendars are built while the clock is frozen on FROZEN_DAY, so what they cover never depends
on the day the tests run; every query passes its time explicitly.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import exchange_calendars
import pytest
import time_machine

from brokers import calendars as mc
from brokers.errors import ServiceUnavailable

FROZEN_DAY = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture(scope="module", autouse=True)
def calendars_built_on_a_fixed_day():
    mc.reset_calendars()
    with time_machine.travel(FROZEN_DAY, tick=False):
        yield
    mc.reset_calendars()


@pytest.fixture
def fresh_calendars():
    """For tests that watch or change how calendars are built: start and end with none built."""
    mc.reset_calendars()
    yield
    mc.reset_calendars()


@pytest.fixture
def counted_builds(monkeypatch, fresh_calendars):
    builds = []
    real = exchange_calendars.get_calendar

    def counting(name, *args, **kwargs):
        builds.append(name)
        time.sleep(0.05)  # widen the window in which concurrent callers could race
        return real(name, *args, **kwargs)

    monkeypatch.setattr(exchange_calendars, "get_calendar", counting)
    return builds


# --- codes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("asset_class", "code"), [("us_equity", "XNYS"), ("kr_equity", "XKRX"), ("crypto", None)])
def test_calendar_code_maps_each_asset_class(asset_class, code):
    assert mc.calendar_code(asset_class) == code


def test_calendar_code_rejects_unknown_asset_class():
    with pytest.raises(ValueError):
        mc.calendar_code("futures")


def test_naive_time_is_refused_rather_than_taken_as_utc():
    with pytest.raises(ValueError):
        mc.is_open("us_equity", datetime(2026, 11, 25, 15, 0))


# --- NYSE ----------------------------------------------------------------------------------------

def test_nyse_is_open_during_a_regular_session():
    assert mc.is_open("us_equity", utc(2026, 11, 25, 15, 0))  # Wed 10:00 ET


def test_nyse_is_closed_before_the_opening_bell():
    assert not mc.is_open("us_equity", utc(2026, 11, 25, 14, 29))  # 09:29 ET


def test_nyse_next_open_before_the_bell_is_the_same_days_open():
    assert mc.next_open("us_equity", utc(2026, 11, 25, 14, 0)) == utc(2026, 11, 25, 14, 30)


def test_nyse_is_closed_at_the_closing_bell():
    assert not mc.is_open("us_equity", utc(2026, 11, 25, 21, 0))  # 16:00 ET: close excluded


def test_nyse_is_closed_on_thanksgiving():
    assert not mc.is_open("us_equity", utc(2026, 11, 26, 15, 0))


def test_nyse_next_open_after_thanksgiving_is_friday_morning():
    assert mc.next_open("us_equity", utc(2026, 11, 26, 15, 0)) == utc(2026, 11, 27, 14, 30)


def test_nyse_day_after_thanksgiving_closes_early_at_1300_et():
    assert mc.session_close("us_equity", utc(2026, 11, 27, 15, 0)) == utc(2026, 11, 27, 18, 0)


def test_nyse_is_open_a_minute_before_the_early_close():
    assert mc.is_open("us_equity", utc(2026, 11, 27, 17, 59))


def test_nyse_is_closed_from_the_early_close_on():
    assert not mc.is_open("us_equity", utc(2026, 11, 27, 18, 0))


def test_nyse_session_close_while_closed_is_the_next_sessions_close():
    # Saturday -> Monday 2026-11-30 16:00 ET
    assert mc.session_close("us_equity", utc(2026, 11, 28, 15, 0)) == utc(2026, 11, 30, 21, 0)


def test_next_open_while_open_is_the_following_session():
    assert mc.next_open("us_equity", utc(2026, 11, 25, 15, 0)) == utc(2026, 11, 27, 14, 30)


# --- KRX -----------------------------------------------------------------------------------------

def test_krx_is_open_during_a_regular_session():
    assert mc.is_open("kr_equity", utc(2026, 11, 25, 0, 0))  # 09:00 KST


def test_krx_regular_session_closes_at_1530_kst():
    assert mc.session_close("kr_equity", utc(2026, 11, 25, 3, 0)) == utc(2026, 11, 25, 6, 30)


@pytest.mark.parametrize("exam_day", sorted(mc.SESSION_OVERRIDES["XKRX"]))
def test_krx_opens_at_1000_kst_on_exam_day(exam_day):
    # 09:30 KST would be inside a regular session
    assert not mc.is_open("kr_equity", datetime(exam_day.year, exam_day.month, exam_day.day, 0, 30, tzinfo=UTC))


@pytest.mark.parametrize("exam_day", sorted(mc.SESSION_OVERRIDES["XKRX"]))
def test_krx_trades_until_1630_kst_on_exam_day(exam_day):
    # 16:00 KST would be after a regular close
    assert mc.is_open("kr_equity", datetime(exam_day.year, exam_day.month, exam_day.day, 7, 0, tzinfo=UTC))


def test_krx_exam_day_2026_session_is_1000_to_1630_kst():
    session = mc.current_or_next_session("kr_equity", utc(2026, 11, 18, 23, 0))  # 08:00 KST on 11-19
    assert (session.open, session.close) == (utc(2026, 11, 19, 1, 0), utc(2026, 11, 19, 7, 30))


def test_override_table_holds_the_announced_exam_days():
    assert set(mc.SESSION_OVERRIDES["XKRX"]) >= {datetime(2025, 11, 13).date(), datetime(2026, 11, 19).date(),
                                                 datetime(2027, 11, 18).date()}


def test_krx_is_closed_on_december_31():
    assert not mc.is_open("kr_equity", utc(2026, 12, 31, 3, 0))  # Thursday, 12:00 KST


def test_krx_next_open_after_december_31_is_first_trading_day_at_1000_kst():
    assert mc.next_open("kr_equity", utc(2026, 12, 31, 3, 0)) == utc(2027, 1, 4, 1, 0)


def test_krx_is_closed_at_0930_kst_on_the_first_trading_day():
    assert not mc.is_open("kr_equity", utc(2027, 1, 4, 0, 30))


# --- crypto --------------------------------------------------------------------------------------

def test_crypto_is_open_on_a_weekend_holiday_night():
    assert mc.is_open("crypto", utc(2026, 12, 26, 3, 0))


def test_crypto_session_closes_at_the_next_utc_midnight():
    assert mc.session_close("crypto", utc(2026, 11, 25, 23, 59)) == utc(2026, 11, 26, 0, 0)


def test_crypto_session_at_midnight_closes_at_the_following_midnight():
    assert mc.session_close("crypto", utc(2026, 11, 26, 0, 0)) == utc(2026, 11, 27, 0, 0)


def test_crypto_next_open_is_now():
    assert mc.next_open("crypto", utc(2026, 11, 26, 15, 0)) == utc(2026, 11, 26, 15, 0)


def test_results_are_aware_utc():
    assert mc.next_open("kr_equity", utc(2026, 12, 31, 3, 0)).utcoffset() == timedelta(0)


# --- horizon and building ------------------------------------------------------------------------

def test_time_beyond_the_calendar_horizon_raises_a_clear_service_unavailable():
    with pytest.raises(mc.CalendarUnavailable) as caught:
        mc.is_open("us_equity", utc(2028, 1, 5, 15, 0))  # built 2026-11-25: ends about 2027-11-25
    assert isinstance(caught.value, ServiceUnavailable)
    assert (caught.value.code, caught.value.status_code) == ("SERVICE_UNAVAILABLE", 503)
    assert "XNYS calendar covers sessions" in caught.value.detail
    assert "2028-01-05T15:00:00Z" in caught.value.detail


def test_next_open_past_the_last_session_raises_calendar_unavailable():
    with pytest.raises(mc.CalendarUnavailable):
        mc.next_open("us_equity", utc(2027, 11, 25, 22, 0))  # after the last built session's close


def test_time_before_the_calendar_start_raises_calendar_unavailable():
    with pytest.raises(mc.CalendarUnavailable):
        mc.is_open("us_equity", utc(2020, 1, 6, 15, 0))


def test_calendar_is_built_once_per_process(counted_builds):
    for minute in range(3):
        mc.is_open("us_equity", utc(2026, 11, 25, 15, minute))
    assert counted_builds == ["XNYS"]


def test_calendar_is_built_lazily_on_first_use(counted_builds):
    mc.is_open("crypto", utc(2026, 11, 25, 15, 0))
    mc.is_open("us_equity", utc(2026, 11, 25, 15, 0))
    assert counted_builds == ["XNYS"]


def test_concurrent_first_calls_build_the_calendar_once(counted_builds):
    start = threading.Barrier(8)

    def ask():
        start.wait()
        mc.is_open("us_equity", utc(2026, 11, 25, 15, 0))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counted_builds == ["XNYS"]


def test_long_running_worker_rebuilds_before_the_horizon(fresh_calendars):
    mc.is_open("us_equity", utc(2026, 11, 25, 15, 0))  # built on 2026-11-25
    with time_machine.travel(datetime(2027, 11, 10, 12, 0, tzinfo=UTC), tick=False):
        assert mc.is_open("us_equity", utc(2027, 12, 1, 15, 0))  # past the first build's end


def test_calendar_is_not_rebuilt_twice_on_the_same_day(counted_builds):
    mc.is_open("us_equity", utc(2026, 11, 25, 15, 0))
    with pytest.raises(mc.CalendarUnavailable):
        mc.is_open("us_equity", utc(2028, 1, 5, 15, 0))
    assert counted_builds == ["XNYS"]
