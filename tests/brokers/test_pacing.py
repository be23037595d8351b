"""brokers.pacing: one request budget per broker key, kept in the shared cache.

The suite's `pacing_clock` fixture (tests/conftest.py) makes a wait move a virtual clock instead
of sleeping, so the budget is observed through the waits, never through elapsed time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from brokers import pacing
from brokers.errors import BrokerUnavailable, ServiceUnavailable
from brokers.pacing import Pacer, remaining_in_second

ROOT = Path(__file__).resolve().parents[2]


def send_times(pacer: Pacer, clock, count: int) -> list[float]:
    """When each of `count` requests may start, by the pacer's clock."""
    times = []
    for _ in range(count):
        pacer.wait_turn()
        times.append(clock.now())
    return times


def most_in_one_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


def test_requests_of_one_key_are_spaced_to_the_rate(pacing_clock):
    times = send_times(Pacer(broker="kis", key="paper:app-key-1", group="rest", rate=2), pacing_clock, 7)
    assert all(later - earlier >= 0.5 for earlier, later in zip(times, times[1:]))
    assert most_in_one_second(times) <= 2


def test_two_adapters_of_one_key_share_one_budget(pacing_clock):
    first = Pacer(broker="kis", key="paper:app-key-1", group="rest", rate=2)
    second = Pacer(broker="kis", key="paper:app-key-1", group="rest", rate=2)
    times = []
    for pacer in (first, second) * 4:
        pacer.wait_turn()
        times.append(pacing_clock.now())
    assert most_in_one_second(times) <= 2


def test_another_key_has_its_own_budget(pacing_clock):
    busy = Pacer(broker="kis", key="paper:app-key-1", group="rest", rate=2)
    send_times(busy, pacing_clock, 4)
    pacing_clock.waits.clear()
    Pacer(broker="kis", key="paper:app-key-2", group="rest", rate=2).wait_turn()
    assert pacing_clock.waits == [] or pacing_clock.waits[0] <= busy.slot_seconds


def test_the_cache_never_holds_the_key_in_clear(pacing_clock):
    from django.core.cache import cache

    Pacer(broker="upbit", key="ak-secretish-access-key", group="order", rate=12).wait_turn()
    if hasattr(cache, "keys"):  # django-redis (the PostgreSQL + Redis leg)
        stored = list(cache.keys("pace:*"))
    else:  # the in-process cache of the SQLite leg
        stored = list(cache._cache.keys())
    assert stored and not any("ak-secretish-access-key" in key for key in stored)


def test_no_slot_within_the_bounded_wait_is_broker_unavailable_without_sending(pacing_clock, equity_orders,
                                                                               monkeypatch):
    equity_orders.PACING_MAX_WAIT_SECONDS = 1
    pacer = Pacer(broker="kis", key="paper:app-key-1", group="rest", rate=2)
    monkeypatch.setattr(pacing, "_sleep", lambda seconds: None)  # the clock stands still: every request at once
    pacer.wait_turn()
    with pytest.raises(BrokerUnavailable, match="rate limit"):
        for _ in range(5):
            pacer.wait_turn()


def test_a_hold_delays_the_groups_next_request_by_a_second(pacing_clock):
    pacer = Pacer(broker="upbit", key="ak-1", group="order", rate=12)
    pacer.wait_turn()
    pacing_clock.waits.clear()
    pacer.hold(1.0)
    pacer.wait_turn()
    assert sum(pacing_clock.waits) >= 1.0


@pytest.mark.parametrize(("header", "parsed"), [
    ("group=order; min=1800; sec=0", ("order", 0)),
    ("group=default; min=1800; sec=29", ("default", 29)),
    ("GROUP=order;sec=7", ("order", 7)),
    (None, (None, None)),
    ("group=order; sec=lots", ("order", None)),
])
def test_remaining_req_header_is_read_as_group_and_requests_left_this_second(header, parsed):
    assert remaining_in_second(header) == parsed


class _DeadCache:
    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise ConnectionError("redis down")
        return fail


def test_an_order_is_refused_with_503_when_the_pacing_cache_is_down(pacing_clock, monkeypatch):
    monkeypatch.setattr(pacing, "caches", {"default": _DeadCache()})
    with pytest.raises(ServiceUnavailable):
        Pacer(broker="kis", key="paper:app-key-1", group="rest", rate=2).wait_turn(critical=True)


def test_reads_are_paced_per_process_when_the_pacing_cache_is_down(pacing_clock, monkeypatch):
    monkeypatch.setattr(pacing, "caches", {"default": _DeadCache()})
    times = send_times(Pacer(broker="kis", key="paper:app-key-1", group="rest", rate=2), pacing_clock, 5)
    assert most_in_one_second(times) <= 2


_CLAIMER = """
import json, sys, django
django.setup()
from brokers import pacing
from brokers.pacing import Pacer
claimed = []
pacer = Pacer(broker="kis", key="paper:shared-across-processes", group="rest", rate=20)
for _ in range(int(sys.argv[1])):
    pacer.wait_turn()
    claimed.append(pacer.last_slot)
print(json.dumps(claimed))
"""


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (REDIS_URL), as in the second CI run")
def test_processes_sharing_redis_never_claim_the_same_slot():
    env = {**os.environ, "REDIS_URL": settings.REDIS_URL, "DJANGO_SETTINGS_MODULE": "config.settings",
           "PACING_MAX_WAIT_SECONDS": "30"}
    workers = [subprocess.Popen([sys.executable, "-c", _CLAIMER, "15"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                text=True) for _ in range(3)]
    claimed = []
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0
        claimed.extend(json.loads(out))
    assert len(claimed) == 45 and len(set(claimed)) == 45  # one owner per slot, whichever process
    slots_per_second = 1 / ((1 / 20) * (1 + pacing.SAFETY))
    starts = sorted(claimed)
    assert max(sum(1 for s in starts if first <= s < first + slots_per_second) for first in starts) <= 20


def test_a_clock_stepped_back_does_not_lock_the_budget_until_the_claims_ahead_expire(pacing_clock):
    # Claims made while the clock read two minutes later (another host ahead of us, or our own clock
    # before an NTP step back) must not push every request now past the bounded wait.
    pacer = Pacer(broker="upbit", key="ak-1", group="order", rate=12)
    pacing_clock.offset += 120
    send_times(pacer, pacing_clock, 3)
    pacing_clock.offset -= 120
    pacing_clock.waits.clear()
    pacer.wait_turn()  # not BrokerUnavailable
    assert sum(pacing_clock.waits) <= pacer.slot_seconds
