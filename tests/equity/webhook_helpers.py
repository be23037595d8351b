"""A webhook receiver on loopback and a worker run, shared by the webhook tests."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

import pytest
from django.conf import settings

from tests.loopback import LoopbackHTTP

RQ_QUEUES = {"default": {"URL": settings.REDIS_URL or "redis://127.0.0.1:6379/0", "DEFAULT_TIMEOUT": 60}}
BACKENDS = {
    "database": {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}},
    "rq": {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}},
}


@dataclass
class Receiver:
    """What the endpoint answers (status, delay, headers) and every request it got."""

    url: str
    status: int = 204
    delay: float = 0.0
    headers: dict = field(default_factory=dict)
    received: list = field(default_factory=list)
    wake: threading.Event = field(default_factory=threading.Event)  # set: a delayed answer goes out now

    def __call__(self, request):
        self.received.append((dict(request.headers), request.body))
        if self.delay:
            self.wake.wait(self.delay)
        return self.status, self.headers, ""

    @property
    def ids(self) -> list[str]:
        return [headers["webhook-id"] for headers, _ in self.received]


@pytest.fixture
def receiver(equity_orders):
    equity_orders.WEBHOOK_ALLOW_HTTP_LOOPBACK = True  # as with DEBUG=1: plain http to loopback
    equity_orders.WEBHOOK_TIMEOUT_SECONDS = 0.5
    with LoopbackHTTP() as server:
        server._server.handle_error = lambda *args: None  # a client that timed out and left is the point
        rx = Receiver(url=f"{server.url}/hook")
        server.add_callback("POST", rx.url, rx)
        yield rx


def subscribe(client, url: str, events=("*",)) -> dict:
    resp = client.post("/api/equity/webhooks", {"url": url, "events": list(events)}, format="json")
    assert resp.status_code == 201, resp.content
    return resp.json()


def run_worker() -> None:
    """Work every queued task once, in this process, on whichever backend TASKS names."""
    from django.core.management import call_command

    backend = settings.TASKS["default"]["BACKEND"]
    if backend == "django_tasks_rq.RQBackend":
        import django_rq
        from rq import SimpleWorker

        worker = django_rq.get_worker("default", job_class="django_tasks_rq.backend.Job", worker_class=SimpleWorker)
        worker.work(burst=True)
    else:
        from unittest import mock

        # The worker closes "old" connections between tasks, as a request does; inside a test's
        # transaction that would be the test's own connection.
        with mock.patch("django_tasks_db.management.commands.db_worker.close_old_connections", lambda: None):
            call_command("db_worker", "--batch", "--no-startup-delay", "--interval", "0", verbosity=0)


@pytest.fixture(params=["database", "rq"])
def task_backend(request, settings):
    """The webhook tests run on the database queue and, where Redis is (the PostgreSQL + Redis leg),
    on the RQ backend too: the same code, by settings only."""
    if request.param == "rq":
        if not settings.REDIS_URL:
            pytest.skip("the RQ backend needs REDIS_URL (the PostgreSQL + Redis leg)")
        import django_rq

        settings.RQ_QUEUES = RQ_QUEUES
        django_rq.get_queue("default").empty()
    settings.TASKS = BACKENDS[request.param]
    return request.param


def fake_dns(monkeypatch, table: dict[str, list[str]]) -> None:
    """Host names resolve as `table` says; addresses resolve to themselves; nothing else resolves."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in table:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                    for a in table[host]]
        try:
            import ipaddress

            ipaddress.ip_address(host)
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
