"""Webhook deliveries by real worker processes on PostgreSQL: two workers never send one attempt
twice, and a worker killed mid-delivery leaves it to be sent again (at least once; the receiver
dedupes by webhook-id)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from django.db import connection
from django.utils import timezone

from equity.models import DeliveryStatus, OrderEvent, WebhookAttempt, WebhookDelivery
from tests.equity.helpers import crypto_market, place
from tests.equity.webhook_helpers import Receiver
from tests.loopback import LoopbackHTTP
from tests.multiprocess.conftest import ROOT, _env

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SEND_DUE = "from equity import webhooks; print(webhooks.deliver_due(limit=1000))"


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL), as in the second CI run")


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=_env(None),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    return out


@pytest.fixture
def hook(equity_orders):
    with LoopbackHTTP() as server:
        server._server.handle_error = lambda *args: None  # the killed worker's connection
        rx = Receiver(url=f"{server.url}/hook")
        server.add_callback("POST", rx.url, rx)
        yield rx


def test_two_workers_never_deliver_one_attempt_twice(api_client, sim_crypto, hook):
    hook.delay = 0.01
    assert api_client.post("/api/equity/webhooks", {"url": hook.url, "events": ["*"]}, format="json").status_code == 201
    for i in range(20):
        assert place(api_client, crypto_market(client_order_id=f"m-{i}")).status_code == 201
    assert WebhookDelivery.objects.count() == 20
    # Both db_workers work the per-delivery tasks, and two sweepers race them over the same rows.
    workers = [start("db_worker", "--batch", "--no-startup-delay", "--interval", "0") for _ in range(2)]
    sweepers = [start("shell", "-c", SEND_DUE) for _ in range(2)]
    for process in workers + sweepers:
        finish(process)
    events = sorted(str(pk) for pk in OrderEvent.objects.values_list("pk", flat=True))
    assert sorted(hook.ids) == events  # each exactly once
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}
    assert WebhookAttempt.objects.count() == 20 and set(WebhookAttempt.objects.values_list("number", flat=True)) == {1}


def test_a_worker_killed_mid_delivery_leaves_it_to_be_sent_again_with_the_same_id(api_client, sim_crypto, hook):
    hook.delay = 30  # the receiver takes its time: the worker is killed while it waits
    assert api_client.post("/api/equity/webhooks", {"url": hook.url, "events": ["*"]}, format="json").status_code == 201
    place(api_client, crypto_market())
    delivery = WebhookDelivery.objects.get()
    worker = start("shell", "-c", SEND_DUE)
    deadline = time.monotonic() + 60
    while not hook.received:
        assert time.monotonic() < deadline and worker.poll() is None, "the worker never sent it"
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(10)
    hook.wake.set()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENDING and delivery.attempts == 1
    hook.delay = 0
    assert "{}" in finish(start("shell", "-c", SEND_DUE))  # its claim still holds: nobody sends it
    WebhookDelivery.objects.filter(pk=delivery.pk).update(lease_until=timezone.now())  # the lease runs out
    finish(start("shell", "-c", SEND_DUE))
    assert hook.ids == [str(delivery.event_id)] * 2  # at least once: the receiver dedupes by webhook-id
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 2
    assert list(WebhookAttempt.objects.order_by("number").values_list("number", "status_code")) == [(1, None),
                                                                                                   (2, 204)]
