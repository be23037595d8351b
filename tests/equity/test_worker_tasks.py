"""The worker's side: push_scheduler enqueues the periodic tasks, the backend's worker runs them,
and a host without a worker backend is told so by `manage.py check`."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from equity.apps import check_task_backend
from equity.models import OrderEvent
from tests.equity.helpers import crypto_limit, place
from tests.equity.webhook_helpers import run_worker, task_backend  # noqa: F401

pytestmark = pytest.mark.django_db


def test_push_scheduler_enqueues_each_periodic_task_and_the_worker_runs_them(api_client, sim_crypto, task_backend):
    from brokers.sim_exchange import set_quote

    place(api_client, crypto_limit(limit_price=45000))
    set_quote("crypto", "BTC/USD", "44000")  # fills at the simulator; nobody has read it yet
    call_command("push_scheduler", "--once", stdout=io.StringIO())
    if task_backend == "database":
        from django_tasks_db.models import DBTaskResult

        assert sorted(DBTaskResult.objects.values_list("task_path", flat=True)) == [
            "equity.tasks.deliver_due_webhooks", "equity.tasks.expire_sim_orders",
            "equity.tasks.reconcile_orders_task", "equity.tasks.sync_open_orders"]
    run_worker()
    assert list(OrderEvent.objects.order_by("id").values_list("type", flat=True)) == ["order.accepted",
                                                                                       "order.filled"]
    if task_backend == "database":
        from django_tasks_db.models import DBTaskResult

        assert set(DBTaskResult.objects.values_list("status", flat=True)) == {"SUCCESSFUL"}


@pytest.mark.parametrize("tasks", [None, {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}},
                                   {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}])
def test_check_warns_when_no_worker_backend_is_configured(settings, tasks):
    if tasks is None:
        del settings.TASKS
    else:
        settings.TASKS = tasks
    assert [w.id for w in check_task_backend(None)] == ["equity.W001"]


def test_check_is_quiet_with_the_database_queue(settings):
    assert check_task_backend(None) == []
