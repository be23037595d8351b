"""The hot path of each bench route, in one process: time per request, SQL per request, cProfile.

Run by `bench/run.py --profile` after its setup (same databases, same environment, DEBUG=0),
through Django's test client (the whole middleware and DRF stack; no gunicorn, no network):

    python -m bench.profile RESULTS_DIR [scenario ...]

For each scenario it prints and writes to RESULTS_DIR/profile-<scenario>.txt:
- ms per request without the profiler (median of runs of N requests),
- the SQL statements of one request, grouped by shape (how many times each),
- the top functions by cumulative and by own time under cProfile.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import django

LIST = "/api/equity/orders?asset_class=crypto&size=20"
# name -> how many requests to time
SCENARIOS = {
    "floor_post": 200,
    "floor_list_100": 200,
    "post": 200,
    "list_100": 100,
    "list_10k": 5,
    "list_100k": 2,
    "get_one": 200,
    "positions": 200,
    "account": 200,
}


def _requests(seed: dict):
    """name -> a function(i) that sends the i-th request of that scenario and returns the response."""
    from django.test import Client

    client = Client(HTTP_X_FORWARDED_PROTO="https", HTTP_HOST="127.0.0.1", HTTP_ACCEPT="application/json")
    post_tokens, lt = seed["post_tokens"], seed["list_tokens"]

    def auth(token):
        return {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    if "get_one" not in seed:  # the floor
        def floor_post(i):
            body = {"symbol": "BTC/USD", "side": "buy", "qty": 0.0001, "limit_price": 40000,
                    "client_order_id": f"profile-{time.time_ns()}-{i}"}
            return client.post("/api/floor/items", json.dumps(body), content_type="application/json",
                               **auth(post_tokens[i % len(post_tokens)]))

        return {"floor_post": floor_post,
                "floor_list_100": lambda i: client.get("/api/floor/items?size=20", **auth(lt["l100"]))}

    def post(i):
        body = {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.0001, "order_type": "limit",
                "limit_price": 40000, "client_order_id": f"profile-{time.time_ns()}-{i}"}
        return client.post("/api/equity/orders", json.dumps(body), content_type="application/json",
                           **auth(post_tokens[i % len(post_tokens)]))

    def get_one(i):
        token, oid = seed["get_one"][i % len(seed["get_one"])]
        return client.get(f"/api/equity/orders/{oid}?asset_class=crypto", **auth(token))

    return {
        "post": post,
        "list_100": lambda i: client.get(LIST, **auth(lt["l100"])),
        "list_10k": lambda i: client.get(LIST, **auth(lt["l10k"])),
        "list_100k": lambda i: client.get(LIST, **auth(lt["l100k"])),
        "get_one": get_one,
        "positions": lambda i: client.get("/api/equity/positions?asset_class=crypto",
                                          **auth(post_tokens[i % len(post_tokens)])),
        "account": lambda i: client.get("/api/equity/account?asset_class=crypto",
                                        **auth(post_tokens[i % len(post_tokens)])),
    }


def _shape(sql: str) -> str:
    sql = re.sub(r"'[^']*'", "?", sql)
    sql = re.sub(r"\b\d+(\.\d+)?\b", "?", sql)
    sql = re.sub(r"\(\?(, \?)+\)", "(?…)", sql)
    sql = re.sub(r'"[a-z_]+"\."([a-z_]+)"', r"\1", sql)
    return sql[:220]


def profile(name: str, send, n: int, out_dir: Path) -> str:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    out = io.StringIO()
    for i in range(3):  # warm: imports, connections, caches
        resp = send(i)
        assert resp.status_code in (200, 201), (name, resp.status_code, resp.content[:300])
    timings, cpu = [], []
    redis_calls = REDIS_COMMANDS
    for _ in range(3):
        t0, c0, r0 = time.perf_counter(), time.process_time(), redis_calls[0]
        for i in range(n):
            send(i)
        timings.append((time.perf_counter() - t0) * 1000 / n)
        cpu.append((time.process_time() - c0) * 1000 / n)
        redis_per_request = (redis_calls[0] - r0) / n  # the last of the three runs
    with CaptureQueriesContext(connection) as ctx:
        send(7)
    queries = list(ctx.captured_queries)  # now: the next request's request_started clears the log
    shapes = Counter(_shape(q["sql"]) for q in queries)
    prof = cProfile.Profile()
    prof.enable()
    for i in range(n):
        send(i)
    prof.disable()
    prof.dump_stats(str(out_dir / f"profile-{name}.prof"))
    print(f"== {name}: {statistics.median(timings):.2f} ms per request, of which {statistics.median(cpu):.2f} ms "
          f"this process's CPU (median of 3 × {n}, no profiler); {len(queries)} SQL statements and "
          f"{redis_per_request:.1f} Redis commands per request", file=out)
    for sql, count in shapes.most_common():
        print(f"  {count:3d} × {sql}", file=out)
    for key in ("cumulative", "tottime"):
        s = io.StringIO()
        pstats.Stats(prof, stream=s).strip_dirs().sort_stats(key).print_stats(30)
        text = s.getvalue()
        print(f"-- top 30 by {key}", file=out)
        print(text[text.find("   ncalls"):], file=out)
    return out.getvalue()


def _count_redis_commands() -> list[int]:
    """A one-element counter of the Redis commands this process sends (redis-py's send_command)."""
    counter = [0]
    try:
        from redis.connection import AbstractConnection as Connection
    except ImportError:  # pragma: no cover - older redis-py
        from redis.connection import Connection
    original = Connection.send_command

    def counted(self, *args, **kwargs):
        counter[0] += 1
        return original(self, *args, **kwargs)

    Connection.send_command = counted
    return counter


REDIS_COMMANDS: list[int] = [0]

# Where a placement's time goes: (label, module, attribute path). Times are inclusive (a step
# contains the steps it calls); a name that a later change removed is reported as missing.
POST_STEPS = [
    ("JWT authentication (user query)", "rest_framework_simplejwt.authentication", "JWTAuthentication.authenticate"),
    ("parse PlaceOrderRequest", "equity.views", "_parse"),
    ("services.place_order (all below)", "equity.services", "place_order"),
    ("  idempotency claim (INSERT)", "equity.services", "_claim_key"),
    ("  gate 1 flags (waffle, Redis)", "equity.services", "check_flags"),
    ("  gate 2 rate limit (Redis)", "equity.services", "check_rate"),
    ("  gates 3+4 one read (connection, profile, switches)", "equity.services", "read_for_placement"),
    ("  gate 4 rules (all below)", "risk.manager", "RiskManager.evaluate"),
    ("    adapter.account()", "brokers.adapters.sim", "SimAdapter.account"),
    ("    adapter.positions()", "brokers.adapters.sim", "SimAdapter.positions"),
    ("  route + submitted audit row", "equity.order_sql", "update_row_audited"),
    ("  gate 5 adapter.place_order()", "brokers.adapters.sim", "SimAdapter.place_order"),
    ("  outcome saved (_placed: state, event, audit row)", "equity.services", "_placed"),
    ("    the event's data (OrderResponse of the order)", "equity.events", "order_data"),
    ("render OrderResponse", "equity.serializers", "OrderResponse.to_representation"),
]


def _timed_steps(steps):
    """Wrap each step to add up its CPU and wall time; returns {label: [calls, cpu s, wall s]} or None."""
    import importlib

    totals = {}
    for label, module_name, path in steps:
        try:
            owner = importlib.import_module(module_name)
            *parents, attr = path.split(".")
            for name in parents:
                owner = getattr(owner, name)
            raw = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        except (ImportError, AttributeError, KeyError):
            totals[label] = None
            continue
        cell = totals[label] = [0, 0.0, 0.0]
        is_classmethod = isinstance(raw, classmethod)
        func = raw.__func__ if is_classmethod else raw

        def wrapper(*args, __func=func, __cell=cell, **kwargs):
            c0, t0 = time.process_time(), time.perf_counter()
            try:
                return __func(*args, **kwargs)
            finally:
                __cell[0] += 1
                __cell[1] += time.process_time() - c0
                __cell[2] += time.perf_counter() - t0

        setattr(owner, attr, classmethod(wrapper) if is_classmethod else wrapper)
    return totals


def breakdown(send, n: int, steps) -> str:
    totals = _timed_steps(steps)
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        send(10_000 + i)
    cpu, wall = (time.process_time() - c0) * 1000 / n, (time.perf_counter() - t0) * 1000 / n
    lines = [f"-- where one request's time goes (inclusive, ms per request over {n}; no profiler)",
             f"  {'whole request':40s} cpu {cpu:6.2f}  wall {wall:6.2f}"]
    for label, cell in totals.items():
        if cell is None:
            lines.append(f"  {label:40s} (not found in this version of the code)")
        else:
            lines.append(f"  {label:40s} cpu {cell[1] * 1000 / n:6.2f}  wall {cell[2] * 1000 / n:6.2f}  "
                         f"({cell[0] / n:.0f} call{'s' if cell[0] != n else ''})")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    global REDIS_COMMANDS
    REDIS_COMMANDS = _count_redis_commands()
    out_dir = Path(argv[1])
    names = argv[2:] or [n for n in SCENARIOS if not n.startswith("floor_")]
    django.setup()
    floor = all(n.startswith("floor_") for n in names)
    seed = json.loads((out_dir / ("seed-floor.json" if floor else "seed-project.json")).read_text())
    senders = _requests(seed)
    for name in names:
        text = profile(name, senders[name], SCENARIOS[name], out_dir)
        if name == "post":
            text = breakdown(senders[name], SCENARIOS[name], POST_STEPS) + text
        (out_dir / f"profile-{name}.txt").write_text(text)
        print(text.split("-- top 30", 1)[0], flush=True)


if __name__ == "__main__":
    main(sys.argv)
