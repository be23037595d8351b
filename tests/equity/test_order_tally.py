"""The list's `total` comes from OrderTally, which database triggers keep equal to COUNT(*) of the
placed orders per (user, asset_class, environment, status) on every kind of write."""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest
from django.db import connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Count
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from equity.models import Attempt, Order, OrderTally
from tests.equity.helpers import crypto_limit, place
from tests.factories import BrokerAccountFactory, OrderFactory, UserFactory

pytestmark = pytest.mark.django_db

KEY = ("user_id", "asset_class", "environment", "status")


def counted() -> Counter:
    """What COUNT(*) says, per key, over the placed orders."""
    return Counter({tuple(row[k] for k in KEY): row["n"] for row in
                    Order.objects.filter(attempt=Attempt.DONE).values(*KEY).annotate(n=Count("id"))})


def tallied() -> Counter:
    return Counter({tuple(getattr(t, k) for k in KEY): t.n for t in OrderTally.objects.all() if t.n})


def test_a_placed_order_is_tallied_under_its_status():
    order = OrderFactory(status="accepted")
    assert tallied() == Counter({(order.user_id, "crypto", "paper", "accepted"): 1})


@pytest.mark.parametrize("attempt", [Attempt.IN_FLIGHT, Attempt.FAILED])
def test_an_order_not_placed_is_not_tallied(attempt):
    OrderFactory(attempt=attempt, status="pending")
    assert tallied() == Counter()


def test_an_order_becoming_placed_is_tallied_once():
    order = OrderFactory(attempt=Attempt.IN_FLIGHT, status="pending")
    order.attempt, order.status = Attempt.DONE, "accepted"
    order.save()
    order.save()  # an unchanged save changes nothing
    assert tallied() == Counter({(order.user_id, "crypto", "paper", "accepted"): 1})


def test_a_status_change_moves_the_order_to_the_new_status():
    order = OrderFactory(status="accepted")
    order.status = "filled"
    order.save(update_fields=["status"])
    assert tallied() == Counter({(order.user_id, "crypto", "paper", "filled"): 1})


def test_an_update_of_many_orders_in_one_statement_moves_each_once():
    user = UserFactory()
    OrderFactory.create_batch(3, user=user, status="accepted")
    OrderFactory.create_batch(2, user=user, status="partially_filled")
    Order.objects.filter(user=user).update(status="filled")
    assert tallied() == Counter({(user.pk, "crypto", "paper", "filled"): 5})


def test_bulk_update_keeps_the_tally():
    orders = OrderFactory.create_batch(4, status="accepted")
    for order, status in zip(orders, ["filled", "canceled", "accepted", "expired"]):
        order.status = status
    Order.objects.bulk_update(orders, ["status"])
    assert tallied() == counted()


def test_a_deleted_order_leaves_the_tally():
    keep, gone = OrderFactory.create_batch(2, status="accepted")
    gone.delete()
    assert tallied() == Counter({(keep.user_id, "crypto", "paper", "accepted"): 1})


def test_deleting_a_user_deletes_their_orders_and_leaves_no_tally():
    user = UserFactory()
    OrderFactory.create_batch(3, user=user)
    user.delete()
    assert not OrderTally.objects.filter(user_id=user.pk).exclude(n=0).exists()


def test_the_tally_equals_count_after_a_long_random_history_of_writes():
    rng = random.Random(20261126)
    users = UserFactory.create_batch(3)
    statuses = ["pending", "accepted", "partially_filled", "filled", "canceled", "expired", "rejected"]
    for step in range(300):
        kind = rng.choice(["create", "save", "update", "bulk", "delete"])
        pool = list(Order.objects.order_by("?")[:5])
        if kind == "create" or not pool:
            OrderFactory(user=rng.choice(users), attempt=rng.choice(list(Attempt)), status=rng.choice(statuses),
                         asset_class=rng.choice(["crypto", "us_equity"]), environment=rng.choice(["paper", "live"]))
        elif kind == "save":
            order = pool[0]
            order.attempt, order.status = rng.choice(list(Attempt)), rng.choice(statuses)
            order.save()
        elif kind == "update":
            Order.objects.filter(pk__in=[o.pk for o in pool]).update(status=rng.choice(statuses))
        elif kind == "bulk":
            for order in pool:
                order.status, order.environment = rng.choice(statuses), rng.choice(["paper", "live"])
            Order.objects.bulk_update(pool, ["status", "environment"])
        else:
            pool[0].delete()
        assert tallied() == counted(), f"step {step}: {kind}"


def test_the_list_total_is_read_from_the_tally_without_counting_orders(api_client, sim_crypto):
    for i in range(3):
        place(api_client, crypto_limit(client_order_id=f"t-{i}"))
    with CaptureQueriesContext(connection) as ctx:
        body = api_client.get("/api/equity/orders", {"asset_class": "crypto"}).json()
    assert body["total"] == 3
    assert not [q["sql"] for q in ctx.captured_queries if "COUNT(" in q["sql"].upper()]


def test_the_list_total_of_a_status_group_sums_its_statuses(user, api_client):
    OrderFactory(user=user, status="canceled")
    OrderFactory(user=user, status="expired")
    OrderFactory(user=user, status="filled")
    BrokerAccountFactory(user=user)
    assert api_client.get("/api/equity/orders", {"asset_class": "crypto", "status": "canceled"}).json()["total"] == 2


@pytest.mark.django_db(transaction=True)
def test_the_migration_counts_the_orders_placed_before_it():
    user = UserFactory()
    OrderFactory.create_batch(2, user=user, status="filled")
    OrderFactory(user=user, attempt=Attempt.FAILED, status="rejected")
    executor = MigrationExecutor(connection)
    executor.migrate([("equity", "0002_feature_flags")])
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes("equity"))
    assert tallied() == Counter({(user.pk, "crypto", "paper", "filled"): 2})


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_of_one_users_orders_neither_deadlock_nor_lose_a_count():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: real concurrent transactions")
    user = UserFactory()
    OrderFactory.create_batch(40, user=user, status="accepted")
    ids = list(Order.objects.filter(user=user).values_list("pk", flat=True))
    errors = []

    def writer(seed: int):
        rng = random.Random(seed)
        try:
            for _ in range(30):
                picked = rng.sample(ids, 4)
                statuses = ["accepted", "partially_filled", "filled", "canceled"]
                with transaction.atomic():
                    # Any writer of several orders locks them in key order first: without it two
                    # multi-row UPDATEs can deadlock on the order rows alone (a sequential scan
                    # meets rows in physical order, which differs between snapshots), tally or not.
                    # What this test pins is that the tally's own locks add no deadlock.
                    list(Order.objects.select_for_update().filter(pk__in=picked).order_by("pk").values_list("pk"))
                    if rng.random() < 0.5:
                        Order.objects.filter(pk__in=picked).update(status=rng.choice(statuses))
                    else:
                        rows = list(Order.objects.filter(pk__in=picked))
                        for row in rows:
                            row.status = rng.choice(statuses)
                        Order.objects.bulk_update(rows, ["status"])
        except Exception as exc:  # a deadlock would surface here
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    assert tallied() == counted()


@pytest.mark.django_db(transaction=True)
def test_the_bracket_legs_migration_keeps_the_tally_triggers_both_ways():
    """SQLite rebuilds equity_order to add (and drop) Order.parent, which drops its triggers: 0004
    installs them again in both directions."""
    user = UserFactory()
    executor = MigrationExecutor(connection)
    executor.migrate([("equity", "0003_order_tally")])
    before = MigrationExecutor(connection).loader.project_state(("equity", "0003_order_tally")).apps
    OldOrder = before.get_model("equity", "Order")
    OldOrder.objects.create(user_id=user.pk, client_order_id="before", request_fingerprint="", attempt="done",
                            attempt_started_at=timezone.now(), asset_class="crypto", environment="paper",
                            symbol="BTC/USD", side="buy", order_type="market", time_in_force="gtc", qty=1,
                            status="filled")
    assert tallied() == counted() == Counter({(user.pk, "crypto", "paper", "filled"): 1})
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes("equity"))
    parent = OrderFactory(user=user, status="filled")
    OrderFactory(user=user, status="accepted", parent=parent, leg="tp", client_order_id="x:tp")
    Order.objects.filter(client_order_id="before").update(status="canceled")
    assert tallied() == counted() == Counter({(user.pk, "crypto", "paper", "filled"): 1,
                                               (user.pk, "crypto", "paper", "accepted"): 1,
                                               (user.pk, "crypto", "paper", "canceled"): 1})
