"""Webhooks (SPEC.md "Order updates pushed"): subscriptions, SSRF refusals, Standard Webhooks
signatures, delivery by the worker only, retries on schedule, disabling, admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.contrib.admin.models import LogEntry
from django.utils import timezone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from equity import webhooks
from equity.models import DeliveryStatus, OrderEvent, WebhookAttempt, WebhookDelivery, WebhookSubscription
from tests.equity.helpers import assert_error, crypto_limit, crypto_market, place
from tests.equity.webhook_helpers import fake_dns, receiver, run_worker, subscribe, task_backend  # noqa: F401

pytestmark = pytest.mark.django_db


# --- subscriptions -------------------------------------------------------------------------------

def test_the_secret_is_shown_once_and_the_list_never_shows_it(api_client, receiver):
    made = subscribe(api_client, receiver.url, ["order.filled"])
    assert made["secret"].startswith("whsec_") and made["active"] is True and made["events"] == ["order.filled"]
    Webhook(made["secret"])  # a secret the standardwebhooks library takes
    listed = api_client.get("/api/equity/webhooks").json()["items"]
    assert [w["id"] for w in listed] == [made["id"]] and "secret" not in listed[0]
    assert WebhookSubscription.objects.get().secret == made["secret"]
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT signing FROM equity_webhooksubscription")
        assert made["secret"] not in cursor.fetchone()[0]  # encrypted at rest


def test_delete_is_204_for_ones_own_and_404_for_anyone_elses(api_client, receiver, make_client, other_user):
    made = subscribe(api_client, receiver.url)
    assert_error(make_client(other_user).delete(f"/api/equity/webhooks/{made['id']}"), 404, "NOT_FOUND")
    assert make_client(other_user).get("/api/equity/webhooks").json() == {"items": []}
    assert api_client.delete(f"/api/equity/webhooks/{made['id']}").status_code == 204
    assert_error(api_client.delete(f"/api/equity/webhooks/{made['id']}"), 404, "NOT_FOUND")


@pytest.mark.parametrize("body", [{"url": "https://hooks.example.com/x", "events": []},
                                  {"url": "https://hooks.example.com/x", "events": ["order.exploded"]},
                                  {"url": "not a url", "events": ["*"]},
                                  {"url": "https://hooks.example.com/x", "events": ["*"], "extra": 1}])
def test_a_malformed_subscription_is_400(api_client, body, monkeypatch):
    fake_dns(monkeypatch, {"hooks.example.com": ["93.184.216.34"]})
    assert_error(api_client.post("/api/equity/webhooks", body, format="json"), 400, "VALIDATION_ERROR")


# --- SSRF ---------------------------------------------------------------------------------------

REFUSED = [
    "http://127.0.0.1/hook",  # plain http, DEBUG off
    "http://hooks.example.com/hook",  # plain http to a public host
    "https://10.0.0.1/hook",
    "https://192.168.1.20/hook",
    "https://169.254.169.254/latest/meta-data/",  # cloud metadata
    "https://[::1]/hook",
    "https://[fd00:ec2::254]/hook",  # AWS's IPv6 metadata address (unique local)
    "https://[::ffff:10.0.0.1]/hook",  # IPv4-mapped private
    "https://0.0.0.0/hook",
    "https://internal.example.com/hook",  # resolves to a private address
    "https://half.example.com/hook",  # one public address, one private: refused
    "https://nowhere.example.com/hook",  # does not resolve
    "https://user:pw@hooks.example.com/hook",
    "ftp://hooks.example.com/hook",
]


@pytest.mark.parametrize("url", REFUSED)
def test_urls_that_are_not_https_to_public_addresses_are_refused_at_subscription(api_client, url, monkeypatch,
                                                                                 equity_orders):
    equity_orders.WEBHOOK_ALLOW_HTTP_LOOPBACK = False  # as in production (DEBUG=0)
    fake_dns(monkeypatch, {"hooks.example.com": ["93.184.216.34"], "internal.example.com": ["10.1.2.3"],
                           "half.example.com": ["93.184.216.34", "172.16.0.9"]})
    resp = api_client.post("/api/equity/webhooks", {"url": url, "events": ["*"]}, format="json")
    assert_error(resp, 400, "VALIDATION_ERROR")
    assert WebhookSubscription.objects.count() == 0


def test_https_to_a_public_address_is_accepted(api_client, monkeypatch):
    fake_dns(monkeypatch, {"hooks.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]})
    assert api_client.post("/api/equity/webhooks", {"url": "https://hooks.example.com/x", "events": ["*"]},
                           format="json").status_code == 201


def test_plain_http_is_allowed_only_to_loopback_in_development(api_client, equity_orders, monkeypatch):
    fake_dns(monkeypatch, {"localhost": ["127.0.0.1"], "hooks.example.com": ["93.184.216.34"]})
    equity_orders.WEBHOOK_ALLOW_HTTP_LOOPBACK = True
    assert subscribe(api_client, "http://localhost:9/hook")["active"]
    assert_error(api_client.post("/api/equity/webhooks", {"url": "http://hooks.example.com/x", "events": ["*"]},
                                 format="json"), 400, "VALIDATION_ERROR")


def test_a_host_that_resolves_to_a_private_address_after_subscribing_is_refused_at_delivery(
        api_client, sim_crypto, monkeypatch):
    table = {"hooks.example.com": ["93.184.216.34"]}
    fake_dns(monkeypatch, table)
    subscribe(api_client, "https://hooks.example.com/x")
    table["hooks.example.com"] = ["10.0.0.7"]  # DNS changed (rebinding)
    place(api_client, crypto_market())
    assert webhooks.deliver_due() == {"retry": 1}
    attempt = WebhookAttempt.objects.get()
    assert attempt.status_code is None and attempt.error.startswith("refused: the host resolves to a private")


def test_a_redirect_is_not_followed(api_client, sim_crypto, receiver):
    receiver.status, receiver.headers = 302, {"Location": "http://10.0.0.1/internal"}
    subscribe(api_client, receiver.url)
    place(api_client, crypto_market())
    assert webhooks.deliver_due() == {"retry": 1}  # the network guard would fail the test on a follow
    attempt = WebhookAttempt.objects.get()
    assert (attempt.status_code, attempt.error) == (302, "redirect not followed")
    assert len(receiver.received) == 1


# --- signatures ---------------------------------------------------------------------------------

def test_a_delivery_verifies_with_the_standardwebhooks_library_and_is_the_feeds_event(
        api_client, sim_crypto, receiver, task_backend, django_capture_on_commit_callbacks):
    secret = subscribe(api_client, receiver.url)["secret"]
    with django_capture_on_commit_callbacks(execute=True):
        assert place(api_client, crypto_market()).status_code == 201
    assert receiver.received == []  # not in the request: the worker delivers
    run_worker()
    [(headers, body)] = receiver.received
    payload = Webhook(secret).verify(body, headers)
    [event] = api_client.get("/api/equity/events").json()["items"]
    assert payload == event and headers["webhook-id"] == str(event["id"])
    assert WebhookDelivery.objects.get().status == DeliveryStatus.DELIVERED


def test_a_tampered_body_an_old_timestamp_or_another_secret_does_not_verify(api_client, sim_crypto, receiver):
    secret = subscribe(api_client, receiver.url)["secret"]
    place(api_client, crypto_market())
    webhooks.deliver_due()
    [(headers, body)] = receiver.received
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b'"filled"', b'"canceled"'), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(body, headers)
    with time_machine.travel(timezone.now() + timedelta(minutes=10)):
        with pytest.raises(WebhookVerificationError, match="too old"):
            Webhook(secret).verify(body, headers)


def test_the_signature_is_hmac_sha256_of_id_timestamp_and_body():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks reference vector
    signature = webhooks.sign(secret=secret, msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp=1614265330,
                              body=b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


# --- delivery never in the request, retried on schedule, then disabled ------------------------------

@pytest.mark.parametrize("endpoint", ["dead", "slow", "500"])
def test_a_failing_endpoint_never_delays_or_fails_a_placement_and_is_retried_on_schedule_then_disabled(
        api_client, sim_crypto, receiver, endpoint, equity_orders):
    equity_orders.WEBHOOK_RETRY_BASE_SECONDS = 60
    url = receiver.url
    if endpoint == "dead":
        import socket

        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/hook"  # nothing listens there
        probe.close()
    elif endpoint == "slow":
        receiver.delay = 1.0  # beyond WEBHOOK_TIMEOUT_SECONDS (0.5)
    else:
        receiver.status = 500
    subscribe(api_client, url)
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        placed = place(api_client, crypto_market())
        assert placed.status_code == 201 and placed.json()["status"] == "filled"
        assert receiver.received == []  # the placement made no call to the endpoint
        assert webhooks.deliver_due() == {"retry": 1}
        delivery = WebhookDelivery.objects.get()
        first_delay = delivery.next_attempt_at - start
        assert timedelta(seconds=30) <= first_delay <= timedelta(seconds=60)  # 60 s base, full jitter
        assert webhooks.deliver_due() == {}  # not due yet
        clock.move_to(delivery.next_attempt_at + timedelta(seconds=1))
        assert webhooks.deliver_due() == {"retry": 1}
        delivery.refresh_from_db()
        assert delivery.attempts == 2 and delivery.next_attempt_at - timezone.now() <= timedelta(seconds=120)
        # Keep failing for 24 h: retried on its schedule, then the subscription is disabled.
        while WebhookSubscription.objects.get().active:
            delivery.refresh_from_db()
            clock.move_to(delivery.next_attempt_at + timedelta(seconds=1))
            webhooks.deliver_due()
            assert timezone.now() - start < timedelta(hours=26)
    subscription = WebhookSubscription.objects.get()
    assert subscription.disabled_reason.startswith("Disabled at") and "24 h" in subscription.disabled_reason
    assert WebhookDelivery.objects.get().status == DeliveryStatus.FAILED
    attempts = list(WebhookAttempt.objects.order_by("number"))
    assert [a.number for a in attempts] == list(range(1, len(attempts) + 1)) and len(attempts) > 5
    assert all(a.latency_ms is not None and (a.error or a.status_code) for a in attempts)
    listed = api_client.get("/api/equity/webhooks").json()["items"][0]
    assert listed["active"] is False and listed["disabled_reason"] == subscription.disabled_reason


def test_a_success_ends_the_failing_streak(api_client, sim_crypto, receiver):
    receiver.status = 500
    subscribe(api_client, receiver.url)
    place(api_client, crypto_market())
    webhooks.deliver_due()
    assert WebhookSubscription.objects.get().failing_since is not None
    receiver.status = 200
    WebhookDelivery.objects.update(next_attempt_at=timezone.now())
    assert webhooks.deliver_due() == {"delivered": 1}
    assert WebhookSubscription.objects.get().failing_since is None


def test_each_matching_subscription_gets_one_delivery_of_each_event(api_client, sim_crypto, receiver):
    subscribe(api_client, receiver.url, ["order.filled"])
    subscribe(api_client, receiver.url, ["*"])
    subscribe(api_client, receiver.url, ["order.canceled"])
    place(api_client, crypto_limit())  # accepted: only "*"
    place(api_client, crypto_market())  # filled: "*" and order.filled
    assert webhooks.deliver_due() == {"delivered": 3}
    assert webhooks.deliver_due() == {}
    assert sorted(receiver.ids) == sorted(str(e) for e in [*OrderEvent.objects.values_list("id", flat=True)] +
                                          [OrderEvent.objects.get(type="order.filled").pk])


def test_a_delivery_claimed_by_a_worker_that_died_is_sent_again_with_the_same_webhook_id(
        api_client, sim_crypto, receiver):
    subscribe(api_client, receiver.url)
    place(api_client, crypto_market())
    delivery = WebhookDelivery.objects.get()
    # A worker claimed it (and perhaps sent it) and died before recording the outcome.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.SENDING, attempts=1,
                                                          lease_until=timezone.now() + timedelta(minutes=1))
    assert webhooks.deliver_due() == {}  # its lease still runs: nobody else sends it
    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        assert webhooks.deliver_due() == {"delivered": 1}
    assert receiver.ids == [str(delivery.event_id)]
    assert WebhookDelivery.objects.get().attempts == 2


def test_deleting_a_subscription_drops_its_pending_deliveries(api_client, sim_crypto, receiver):
    made = subscribe(api_client, receiver.url)
    place(api_client, crypto_market())
    api_client.delete(f"/api/equity/webhooks/{made['id']}")
    assert webhooks.deliver_due() == {} and receiver.received == []


# --- admin --------------------------------------------------------------------------------------

@pytest.fixture
def operator(client, django_user_model):
    admin = django_user_model.objects.create_superuser("ops", "ops@example.com", "pw")
    client.force_login(admin)
    return client


def test_admin_shows_every_attempt_read_only_and_retries_and_disables_audited(
        api_client, sim_crypto, receiver, operator):
    receiver.status = 503
    subscribe(api_client, receiver.url)
    place(api_client, crypto_market())
    webhooks.deliver_due()
    delivery = WebhookDelivery.objects.get()
    page = operator.get(f"/admin/equity/webhookdelivery/{delivery.pk}/change/")
    assert page.status_code == 200 and b"HTTP 503" in page.content
    assert operator.get("/admin/equity/webhookattempt/").status_code == 200
    assert operator.post(f"/admin/equity/webhookdelivery/{delivery.pk}/change/", {}).status_code == 403
    receiver.status = 200
    operator.post("/admin/equity/webhookdelivery/", {"action": "retry_deliveries", "_selected_action": [delivery.pk]})
    assert WebhookDelivery.objects.get().next_attempt_at <= timezone.now()
    assert webhooks.deliver_due() == {"delivered": 1}
    subscription = WebhookSubscription.objects.get()
    operator.post("/admin/equity/webhooksubscription/",
                  {"action": "disable_subscriptions", "_selected_action": [subscription.pk]})
    subscription.refresh_from_db()
    assert not subscription.active and "operator (ops)" in subscription.disabled_reason
    messages = set(LogEntry.objects.values_list("change_message", flat=True))
    assert {"Retry requested by an operator.", "Disabled the webhook subscription."} <= messages
    page = operator.get(f"/admin/equity/webhooksubscription/{subscription.pk}/change/")
    assert page.status_code == 200 and subscription.secret.encode() not in page.content
