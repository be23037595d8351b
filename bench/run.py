"""`make bench`: the project under gunicorn against a floor app, in interleaved rounds.

    .venv/bin/python bench/run.py                 # the bench (about 4 minutes)
    .venv/bin/python bench/run.py --soak 120      # make bench-soak: 2 minutes of mixed load, RSS every 10 s
    .venv/bin/python bench/run.py --sweep         # gunicorn workers 2..6, POST and one read

What it does, in order (bench/README.md says why):

1. Installs Debian's wrk if it is missing; starts PostgreSQL and Redis if they are not running
   (as .ci/run does; it never stops them).
2. Drops and creates its own databases `bench_project` and `bench_floor` (synchronous_commit=off
   on both), migrates them and seeds them (bench/seed.py).
3. Starts two gunicorns (sync workers, same flags): the project (config.wsgi) and the floor
   (bench.floor.wsgi), each on a free 127.0.0.1 port, Redis db BENCH_REDIS_DB (default 5,
   flushed first: never db 0, which the test suites use). They are stopped by PID at the end.
4. Warms every route, then measures each scenario with wrk against the floor and the project in
   A B B A order (floor, project, project, floor), each run the same length, waiting between
   runs until every worker is idle, and reports every figure as a ratio to the floor's.
5. Records the RSS of each worker after boot, after warm-up and at the end (and every 10 s of a
   soak), and writes bench/results/<stamp>/ (results.json, table.md, server logs).

Traffic goes to 127.0.0.1 only; every wrk run is bounded by --duration.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PY = ROOT / ".venv" / "bin" / "python"
LUA = BENCH / "lua" / "bench.lua"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "5"))
CONNECTIONS = 50  # the 50 users: one connection each at a time
THREADS = 2

LIST_CONNECTIONS = 4  # one user per list size, one connection per worker
# name -> (project wrk mode, project data set, floor wrk mode, floor data set, connections, seconds)
# The list scenarios read one user's orders and run at LIST_CONNECTIONS: a list request can take
# seconds, and every request still queued when a run ends must be served before the next run
# starts (Server.drain); 50 queued slow requests would not fit the time budget. Their figures
# compare at equal concurrency (floor and project, 100 and 100,000 orders). The 100,000 list
# runs twice as long (a request takes seconds before equity/selectors.py is changed; see README).
SCENARIOS = {
    "POST /orders": ("post", None, "floor_post", None, CONNECTIONS, 1),
    "GET /orders (100)": ("get", "list_100", "get", "list_100", LIST_CONNECTIONS, 1),
    "GET /orders (10,000)": ("get", "list_10k", "get", "list_10k", LIST_CONNECTIONS, 1),
    "GET /orders (100,000)": ("get", "list_100k", "get", "list_100k", LIST_CONNECTIONS, 2),
    "GET /orders/{id}": ("get", "get_one", "get", "list_100", CONNECTIONS, 1),
    "GET /positions": ("get", "positions", "get", "list_100", CONNECTIONS, 1),
    "GET /account": ("get", "account", "get", "list_100", CONNECTIONS, 1),
}
WARM = ("POST /orders", "GET /orders (100)", "GET /orders/{id}", "GET /positions", "GET /account")


def log(msg: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


# --- machine ------------------------------------------------------------------------------------

def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    log("installing wrk (Debian package)")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def ensure_services() -> None:
    """PostgreSQL and Redis on localhost, started as .ci/run starts them when they are down."""
    if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"]).returncode != 0:
        version = sorted(os.listdir("/etc/postgresql"))[0]
        log(f"starting PostgreSQL {version}")
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=True)
        for _ in range(30):
            if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"]).returncode == 0:
                break
            time.sleep(1)
    if subprocess.run(["redis-cli", "-h", "127.0.0.1", "ping"], capture_output=True).returncode != 0:
        log("starting Redis")
        os.makedirs("/var/lib/redis", exist_ok=True)
        os.makedirs("/var/log/redis", exist_ok=True)
        subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
                        "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
                        "--logfile", "/var/log/redis/bench.log"], check=True)
        for _ in range(30):
            if subprocess.run(["redis-cli", "-h", "127.0.0.1", "ping"], capture_output=True).returncode == 0:
                break
            time.sleep(1)


def psql(sql: str, db: str = "postgres") -> None:
    subprocess.run(["psql", f"{PG}/{db}", "-v", "ON_ERROR_STOP=1", "-qAtc", sql], check=True,
                   stdout=subprocess.DEVNULL)


def fresh_database(name: str) -> None:
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(f"CREATE DATABASE {name}")
    # Commits return before the WAL reaches the disk (no data is lost on a process crash, only
    # the last moments on a power loss): the disk of a shared machine is not what we measure.
    psql(f"ALTER DATABASE {name} SET synchronous_commit = off")


def machine_facts() -> dict:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal")))
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()[0:1]
    pg = subprocess.run(["psql", f"{PG}/postgres", "-qAtc", "SHOW server_version"], capture_output=True,
                        text=True).stdout.strip()
    redis_v = subprocess.run(["redis-cli", "-h", "127.0.0.1", "INFO", "server"], capture_output=True,
                             text=True).stdout
    redis_version = next((line.split(":", 1)[1].strip() for line in redis_v.splitlines()
                          if line.startswith("redis_version")), "?")
    gunicorn = subprocess.run([str(PY), "-m", "gunicorn", "--version"], capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem_kb / 1024 / 1024, 1),
            "loadavg_at_start": os.getloadavg(), "python": sys.version.split()[0],
            "postgresql": pg, "redis": redis_version, "gunicorn": gunicorn,
            "wrk": wrk_version[0] if wrk_version else "?"}


# --- servers ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(secret_key: str, fernet_key: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL")}
    env.update({
        "DEBUG": "0", "SECRET_KEY": secret_key, "BROKER_CREDENTIALS_KEYS": fernet_key,
        "ALLOWED_HOSTS": "127.0.0.1,localhost", "JWT_ACCESS_MINUTES": "240",
        # Raised for the run only, so that 50 users placing as fast as they can are not refused.
        "RATE_LIMIT_ORDERS": "100000000/m",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


def project_env(env: dict) -> dict:
    return {**env, "DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": f"{PG}/bench_project",
            "REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}"}


def floor_env(env: dict) -> dict:
    return {**env, "DJANGO_SETTINGS_MODULE": "bench.floor.settings", "DATABASE_URL": f"{PG}/bench_floor"}


class Server:
    def __init__(self, name: str, wsgi: str, env: dict, workers: int, out: Path, probe: str):
        self.name, self.wsgi, self.env, self.workers, self.out, self.probe = name, wsgi, env, workers, out, probe
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.logfile = open(self.out / f"{self.name}-gunicorn.log", "a")
        cmd = [str(PY), "-m", "gunicorn", self.wsgi, "--worker-class", "sync", "--workers", str(self.workers),
               "--bind", f"127.0.0.1:{self.port}", "--timeout", "120", "--backlog", "2048",
               "--chdir", str(ROOT)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self.logfile, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} gunicorn exited; see {self.logfile.name}")
            if len(self.worker_pids()) == self.workers:
                try:
                    urllib.request.urlopen(urllib.request.Request(
                        self.url + self.probe, headers={"X-Forwarded-Proto": "https"}), timeout=5)
                    break
                except urllib.error.HTTPError:
                    break  # 401: up
                except OSError:
                    pass
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} gunicorn did not come up; see {self.logfile.name}")
            time.sleep(0.2)
        log(f"{self.name}: gunicorn pid {self.proc.pid}, workers {self.worker_pids()} on {self.url}")

    def worker_pids(self) -> list[int]:
        if self.proc is None:
            return []
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            return sorted(int(p) for p in text.split())
        except OSError:
            pids = []
            for d in Path("/proc").iterdir():
                if d.name.isdigit():
                    try:
                        if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                            pids.append(int(d.name))
                    except (OSError, IndexError, ValueError):
                        pass
            return sorted(pids)

    def rss_mib(self) -> dict[int, float]:
        out = {}
        for pid in self.worker_pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[pid] = round(int(line.split()[1]) / 1024, 1)
            except OSError:
                pass
        return out

    def cpu_ticks(self) -> int:
        total = 0
        for pid in self.worker_pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
        return total

    def drain(self, limit: float = 90.0) -> float:
        """Wait until no worker uses CPU (requests queued during a run are done); seconds waited."""
        start = time.time()
        last, quiet = self.cpu_ticks(), 0
        while time.time() - start < limit:
            time.sleep(0.25)
            now = self.cpu_ticks()
            quiet = quiet + 1 if now - last <= 1 else 0
            last = now
            if quiet >= 2:
                break
        return round(time.time() - start, 2)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        workers = self.worker_pids()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for pid in workers:  # by PID, never by name
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log(f"{self.name}: gunicorn pid {self.proc.pid} stopped")


# --- load ---------------------------------------------------------------------------------------

def lua_literal(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid Lua string for our ASCII data
    if isinstance(value, (list, tuple)):
        return "{" + ",".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"[{json.dumps(k)}]={lua_literal(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def write_lua_data(path: Path, post_tokens: list[str], gets: dict) -> None:
    path.write_text("return " + lua_literal({"post_tokens": post_tokens, "gets": gets}) + "\n")


def wrk(server: Server, data: Path, mode: str, dataset: str | None, duration: float, run_id: str,
        connections: int = CONNECTIONS) -> dict:
    env = {**os.environ, "BENCH_DATA": str(data), "BENCH_MODE": mode, "BENCH_SET": dataset or "",
           "BENCH_RUN": run_id}
    cmd = ["wrk", "-t", str(THREADS), "-c", str(connections), "-d", f"{duration}s", "--timeout", "60s",
           "-s", str(LUA), server.url]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 120)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary:\n{done.stdout}\n{done.stderr}")
    r = json.loads(line.split(" ", 1)[1])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = sum(r[k] for k in ("err_connect", "err_read", "err_write", "err_timeout", "err_status"))
    return r


class Bench:
    def __init__(self, args):
        self.args = args
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.out = BENCH / "results" / (stamp + (f"-{args.label}" if args.label else ""))
        self.out.mkdir(parents=True, exist_ok=True)
        self.secret = secrets.token_urlsafe(48)
        self.fernet = base64.urlsafe_b64encode(os.urandom(32)).decode()
        self.env = base_env(self.secret, self.fernet)
        self.results: dict = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                              "args": vars(args), "scenarios": {}, "rss_mib": {}}
        self.servers: list[Server] = []
        self.run_no = 0

    # setup

    def setup(self) -> None:
        t0 = time.time()
        ensure_wrk()
        ensure_services()
        self.results["machine"] = machine_facts()
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "-n", str(REDIS_DB), "FLUSHDB"], check=True,
                       capture_output=True)
        for name in ("bench_project", "bench_floor"):
            fresh_database(name)
        penv, fenv = project_env(self.env), floor_env(self.env)
        subprocess.run([str(PY), "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=penv, check=True)
        subprocess.run([str(PY), "-m", "django", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=fenv, check=True)
        t1 = time.time()
        subprocess.run([str(PY), "-m", "bench.seed", "project", str(self.out / "seed-project.json")], cwd=ROOT,
                       env={**penv, "LOG_LEVEL": "WARNING"}, check=True)
        subprocess.run([str(PY), "-m", "bench.seed", "floor", str(self.out / "seed-floor.json")], cwd=ROOT,
                       env={**fenv, "LOG_LEVEL": "WARNING"}, check=True)
        log(f"migrated in {t1 - t0:.1f} s, seeded in {time.time() - t1:.1f} s")
        sp = json.loads((self.out / "seed-project.json").read_text())
        sf = json.loads((self.out / "seed-floor.json").read_text())
        lt, ft = sp["list_tokens"], sf["list_tokens"]
        self.project_data = self.out / "project-data.lua"
        self.floor_data = self.out / "floor-data.lua"
        lst = "/api/equity/orders?asset_class=crypto&size=20"
        write_lua_data(self.project_data, sp["post_tokens"], {
            "list_100": [[lst, lt["l100"]]], "list_10k": [[lst, lt["l10k"]]], "list_100k": [[lst, lt["l100k"]]],
            "get_one": [[f"/api/equity/orders/{oid}?asset_class=crypto", tok] for tok, oid in sp["get_one"]],
            "positions": [["/api/equity/positions?asset_class=crypto", t] for t in sp["post_tokens"]],
            "account": [["/api/equity/account?asset_class=crypto", t] for t in sp["post_tokens"]],
        })
        flst = "/api/floor/items?size=20"
        write_lua_data(self.floor_data, sf["post_tokens"], {
            "list_100": [[flst, ft["l100"]]], "list_10k": [[flst, ft["l10k"]]], "list_100k": [[flst, ft["l100k"]]],
        })
        self.results["seeded"] = {"project": sp["rows"], "floor": sf["rows"]}
        # The run's throwaway keys, so that its databases can be looked at afterwards (this folder is
        # git-ignored; the keys protect nothing but these bench databases).
        for name, env in (("project", penv), ("floor", fenv)):
            keep = ("DJANGO_SETTINGS_MODULE", "DEBUG", "SECRET_KEY", "BROKER_CREDENTIALS_KEYS", "ALLOWED_HOSTS",
                    "DATABASE_URL", "REDIS_URL", "JWT_ACCESS_MINUTES", "RATE_LIMIT_ORDERS")
            (self.out / f"{name}.env").write_text("".join(f"{k}={env[k]}\n" for k in keep if k in env))
        self.results["setup_seconds"] = round(time.time() - t0, 1)
        log(f"setup done in {self.results['setup_seconds']} s: {self.results['seeded']}")

    def start(self, workers: int) -> tuple[Server, Server]:
        project = Server("project", "config.wsgi:application", project_env(self.env), workers, self.out,
                         "/api/equity/orders")
        floor = Server("floor", "bench.floor.wsgi:application", floor_env(self.env), workers, self.out,
                       "/api/floor/items")
        self.servers += [project, floor]
        project.start()
        floor.start()
        return project, floor

    def stop_all(self) -> None:
        for s in self.servers:
            s.stop()
        self.servers = []

    # measuring

    def one(self, server: Server, mode: str, dataset: str | None, duration: float,
            connections: int = CONNECTIONS) -> dict:
        self.run_no += 1
        data = self.project_data if server.name == "project" else self.floor_data
        r = wrk(server, data, mode, dataset, duration, f"{self.out.name}-{self.run_no}", connections)
        r["drain_s"] = server.drain()
        time.sleep(0.3)
        return r

    def warm(self, project: Server, floor: Server, seconds: float) -> None:
        # The long lists take the list route's code path that GET /orders (100) warms; warming them
        # would only queue slow requests.
        for name in WARM:
            pmode, pset, fmode, fset, conns, _ = SCENARIOS[name]
            self.one(project, pmode, pset, seconds, conns)
        for fmode, fset, conns in (("floor_post", None, CONNECTIONS), ("get", "list_100", CONNECTIONS)):
            self.one(floor, fmode, fset, seconds, conns)

    def measure(self, project: Server, floor: Server, duration: float, names=None) -> dict:
        out = {}
        for name in names or SCENARIOS:
            pmode, pset, fmode, fset, conns, factor = SCENARIOS[name]
            runs = {"floor": [], "project": []}
            for side in ("floor", "project", "project", "floor"):  # A B B A
                server = floor if side == "floor" else project
                mode, dataset = (fmode, fset) if side == "floor" else (pmode, pset)
                runs[side].append(self.one(server, mode, dataset, duration * factor, conns))
            out[name] = summarize(runs)
            out[name]["connections"] = conns
            s = out[name]
            log(f"{name:24s} project {s['project']['rps']:8.1f} req/s p50 {_ms(s['project']['p50_ms'])} ms "
                f"p99 {_ms(s['project']['p99_ms'])} ms err {s['project']['errors']} | floor "
                f"{s['floor']['rps']:8.1f} req/s | ratio {s['ratio_rps']:.3f}")
        return out

    def rss(self, label: str) -> None:
        for s in self.servers:
            self.results["rss_mib"].setdefault(s.name, {})[label] = s.rss_mib()

    # modes

    def run_bench(self) -> None:
        project, floor = self.start(self.args.workers)
        self.rss("after boot")
        log("warming up every route")
        self.warm(project, floor, self.args.warmup)
        self.rss("after warm-up")
        self.results["scenarios"] = self.measure(project, floor, self.args.duration)
        self.rss("after the run")
        if self.args.soak:
            self.soak(project, floor)

    def soak(self, project: Server, floor: Server) -> None:
        """Mixed load on both servers for --soak seconds (POST + GET one on the project, POST + list on
        the floor, half the connections each), RSS of every worker every 10 s."""
        log(f"soak: {self.args.soak} s of mixed load")
        self.rss("soak start")
        samples = []
        procs = []
        for server, data, modes in ((project, self.project_data, (("post", None), ("get", "get_one"))),
                                    (floor, self.floor_data, (("floor_post", None), ("get", "list_100")))):
            for mode, dataset in modes:
                env = {**os.environ, "BENCH_DATA": str(data), "BENCH_MODE": mode, "BENCH_SET": dataset or "",
                       "BENCH_RUN": f"{self.out.name}-soak-{server.name}-{mode}"}
                procs.append((server.name, mode, subprocess.Popen(
                    ["wrk", "-t", "1", "-c", str(CONNECTIONS // 4), "-d", f"{self.args.soak}s", "--timeout", "60s",
                     "-s", str(LUA), server.url], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
        start = time.time()
        while any(p.poll() is None for _, _, p in procs):
            time.sleep(10 - ((time.time() - start) % 10))
            samples.append({"t": round(time.time() - start), **{s.name: s.rss_mib() for s in self.servers}})
        loads = {}
        for name, mode, p in procs:
            stdout, _ = p.communicate()
            line = next((x for x in stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
            if line:
                r = json.loads(line.split(" ", 1)[1])
                r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
                r["errors"] = sum(r[k] for k in ("err_connect", "err_read", "err_write", "err_timeout",
                                                   "err_status"))
                loads[f"{name} {mode}"] = r
        for s in self.servers:
            s.drain()
        self.rss("soak end")
        self.results["soak"] = {"seconds": self.args.soak, "samples": samples, "load": loads}
        for key, r in loads.items():
            log(f"soak {key}: {r['requests']} requests, {r['rps']:.1f} req/s, errors {r['errors']}")

    def sweep(self) -> None:
        rows = {}
        for workers in self.args.sweep_workers:
            project, floor = self.start(workers)
            self.warm_quick(project, floor)
            res = self.measure(project, floor, self.args.duration, names=["POST /orders", "GET /orders/{id}"])
            rows[workers] = res
            self.stop_all()
        self.results["sweep"] = rows

    def warm_quick(self, project: Server, floor: Server) -> None:
        """Warm-up for the sweep: only the routes it measures."""
        for mode, dataset in (("post", None), ("get", "get_one")):
            self.one(project, mode, dataset, self.args.warmup)
        for mode, dataset in (("floor_post", None), ("get", "list_100")):
            self.one(floor, mode, dataset, self.args.warmup)


def _ms(value) -> str:
    return "—" if value is None else f"{value:.1f}"


def summarize(runs: dict) -> dict:
    out = {}
    for side, rs in runs.items():
        reqs = sum(r["requests"] for r in rs)
        secs = sum(r["duration_us"] for r in rs) / 1e6
        out[side] = {"rps": round(reqs / secs, 1), "requests": reqs,
                     "p50_ms": round(statistics.mean(r["p50_us"] for r in rs if r["requests"]) / 1000, 2)
                     if reqs else None,
                     "p99_ms": round(statistics.mean(r["p99_us"] for r in rs if r["requests"]) / 1000, 2)
                     if reqs else None,
                     "errors": sum(r["errors"] for r in rs),
                     "runs": [{k: r[k] for k in ("requests", "rps", "p50_us", "p99_us", "errors", "drain_s")}
                              for r in rs]}
    out["ratio_rps"] = round(out["project"]["rps"] / out["floor"]["rps"], 3)
    out["ratio_p50"] = (round(out["project"]["p50_ms"] / out["floor"]["p50_ms"], 2)
                        if out["project"]["p50_ms"] and out["floor"]["p50_ms"] else None)
    return out


# --- report -------------------------------------------------------------------------------------

def table(results: dict) -> str:
    lines = []
    m = results.get("machine", {})
    a = results["args"]
    lines.append(f"Run {results['started_at']} — {m.get('cores')} cores ({m.get('cpu')}), {m.get('mem_gib')} GiB, "
                 f"load average at start {tuple(round(x, 2) for x in m.get('loadavg_at_start', ()))}; "
                 f"PostgreSQL {m.get('postgresql')}, Redis {m.get('redis')}, {m.get('gunicorn')}, {m.get('wrk')}; "
                 f"{a['workers']} sync workers per server; wrk -t{THREADS}, {a['duration']} s a run, "
                 f"floor/project/project/floor per scenario.")
    lines.append("")
    if results.get("scenarios"):
        lines.append("| scenario | conns | req/s | p50 ms | p99 ms | errors | floor req/s | floor p50 ms "
                     "| floor errors | req/s ÷ floor |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, s in results["scenarios"].items():
            p, f = s["project"], s["floor"]
            lines.append(f"| {name} | {s.get('connections', CONNECTIONS)} | {p['rps']:.1f} | {_ms(p['p50_ms'])} | "
                         f"{_ms(p['p99_ms'])} | {p['errors']} | {f['rps']:.1f} | {_ms(f['p50_ms'])} | {f['errors']} | "
                         f"**{s['ratio_rps']:.3f}** |")
        sc = results["scenarios"]
        if "GET /orders (100)" in sc and "GET /orders (100,000)" in sc:
            small, big = sc["GET /orders (100)"]["project"], sc["GET /orders (100,000)"]["project"]
            lines.append("")
            if big["requests"]:
                lines.append(f"List at 100,000 vs 100 orders: time per request (1 / req/s) × "
                             f"{small['rps'] / big['rps']:.1f}, p50 × {big['p50_ms'] / small['p50_ms']:.1f} "
                             f"(goal ≤ 1.2).")
            else:
                lines.append("List at 100,000 orders: no request finished within a run (goal ≤ 1.2 × the 100 list).")
    if results.get("rss_mib"):
        lines.append("")
        lines.append("| RSS MiB per worker | " + " | ".join(results["rss_mib"].get("project", {}).keys()) + " |")
        lines.append("|---|" + "---|" * len(results["rss_mib"].get("project", {})))
        for server, points in results["rss_mib"].items():
            lines.append(f"| {server} | " + " | ".join(
                ", ".join(f"{v:.0f}" for v in pts.values()) for pts in points.values()) + " |")
    if results.get("soak"):
        so = results["soak"]
        lines.append("")
        first, last = so["samples"][0], so["samples"][-1]
        for server in ("project", "floor"):
            a0, a1 = sum(first.get(server, {}).values()), sum(last.get(server, {}).values())
            lines.append(f"Soak {so['seconds']} s, {server}: workers' total RSS {a0:.0f} MiB at {first['t']} s → "
                         f"{a1:.0f} MiB at {last['t']} s ({a1 - a0:+.1f} MiB).")
        for key, r in so["load"].items():
            lines.append(f"- soak load {key}: {r['requests']} requests, {r['rps']:.0f} req/s, errors {r['errors']}")
    if results.get("sweep"):
        lines.append("")
        lines.append("| workers | POST req/s | floor POST req/s | POST ÷ floor | POST p99 ms | GET one req/s | "
                     "GET one p99 ms |")
        lines.append("|---:|---:|---:|---:|---:|---:|---:|")
        for w, res in results["sweep"].items():
            post, one = res["POST /orders"], res["GET /orders/{id}"]
            lines.append(f"| {w} | {post['project']['rps']:.0f} | {post['floor']['rps']:.0f} | "
                         f"{post['ratio_rps']:.2f} | {post['project']['p99_ms']:.0f} | {one['project']['rps']:.0f} | "
                         f"{one['project']['p99_ms']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", "4")))
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up load per route")
    parser.add_argument("--soak", type=int, default=0, help="seconds of mixed load after the run (0: none)")
    parser.add_argument("--soak-only", action="store_true", help="skip the scenarios: boot, warm up, soak")
    parser.add_argument("--sweep", action="store_true", help="measure POST and GET one with 2..6 workers")
    parser.add_argument("--sweep-workers", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    parser.add_argument("--profile", nargs="*", metavar="SCENARIO",
                        help="no servers: profile the routes in one process (bench/profile.py)")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    os.chdir(ROOT)

    def on_term(signum, frame):  # stop the servers (finally below) when the run itself is stopped
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    bench = Bench(args)
    t0 = time.time()
    try:
        bench.setup()
        if args.profile is not None:
            names = args.profile or ["post", "list_100", "list_10k", "list_100k", "get_one", "positions", "account"]
            floor_names = [n for n in names if n.startswith("floor_")] or ["floor_post", "floor_list_100"]
            with open(bench.out / "profile-stderr.log", "w") as errlog:  # the servers' INFO lines
                subprocess.run([str(PY), "-m", "bench.profile", str(bench.out), *floor_names], cwd=ROOT,
                               env=floor_env(bench.env), check=True, stderr=errlog)
                subprocess.run([str(PY), "-m", "bench.profile", str(bench.out),
                                *[n for n in names if not n.startswith("floor_")]], cwd=ROOT,
                               env=project_env(bench.env), check=True, stderr=errlog)
        elif args.sweep:
            bench.sweep()
        elif args.soak_only:
            project, floor = bench.start(args.workers)
            bench.rss("after boot")
            bench.warm(project, floor, args.warmup)
            bench.rss("after warm-up")
            bench.soak(project, floor)
        else:
            bench.run_bench()
    finally:
        bench.stop_all()
    bench.results["total_seconds"] = round(time.time() - t0, 1)
    (bench.out / "results.json").write_text(json.dumps(bench.results, indent=2, default=str))
    text = table(bench.results) + f"\nWhole run: {bench.results['total_seconds']} s.\n"
    (bench.out / "table.md").write_text(text)
    print()
    print(text)
    print(f"results: {bench.out.relative_to(ROOT)}")
    errors = sum(s["project"]["errors"] + s["floor"]["errors"] for s in bench.results.get("scenarios", {}).values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
