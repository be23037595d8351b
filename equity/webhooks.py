"""Webhook subscriptions and their signed deliveries (SPEC.md "Order updates pushed").

Deliveries are made by the worker (equity.tasks), never in a request. Each one is claimed with a
guarded UPDATE (pending and due, or its lease run out), so two workers never send one attempt; a
worker killed after sending leaves the claim to run out and the next worker sends it again: at
least once, and the receiver dedupes by `webhook-id` (the event id).

No server-side request forgery: the URL is checked when subscribing and again before every
delivery (DNS can change), the connection goes to the very address that was checked (the host name
kept for the Host header, TLS SNI and the certificate check), and redirects are not followed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import urllib3
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from brokers.conf import conf
from brokers.errors import InvalidRequest, WebhookNotFound
from equity.models import DeliveryStatus, OrderEvent, WebhookAttempt, WebhookDelivery, WebhookSubscription

logger = logging.getLogger(__name__)

EVENT_TYPES = ("order.pending", "order.accepted", "order.partially_filled", "order.filled", "order.canceled",
               "order.expired", "order.rejected")


class UnsafeWebhookUrl(Exception):
    """The URL may not be called: its scheme, or an address it resolves to."""


# --- SSRF ---------------------------------------------------------------------------------------

def _refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    mapped = getattr(ip, "ipv4_mapped", None) or getattr(ip, "sixtofour", None)
    if mapped is not None:
        return _refused_address(mapped)
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if ip.is_private:
        return "a private address"
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return "a non-public address"
    return None


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the operating system's resolver)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeWebhookUrl(f"the host {host!r} does not resolve") from exc
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    address: str  # the checked address the connection goes to
    path: str


def check_url(url: str) -> Target:
    """The URL's checked target, or UnsafeWebhookUrl. Every address the host resolves to must be
    public; plain http is allowed only to a loopback address, and only with WEBHOOK_ALLOW_HTTP_LOOPBACK
    (the demo site sets it from DEBUG)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeWebhookUrl("not a URL") from exc
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("https", "http") or not host:
        raise UnsafeWebhookUrl("the URL must be https://")
    if parts.username or parts.password:
        raise UnsafeWebhookUrl("the URL must not carry credentials")
    port = port or (443 if scheme == "https" else 80)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    addresses = [str(literal)] if literal else resolve(host, port)
    if not addresses:
        raise UnsafeWebhookUrl(f"the host {host!r} does not resolve")
    ips = [ipaddress.ip_address(a.split("%")[0]) for a in addresses]
    if scheme == "http":
        if not conf.WEBHOOK_ALLOW_HTTP_LOOPBACK or not all(ip.is_loopback for ip in ips):
            raise UnsafeWebhookUrl("the URL must be https:// (plain http only to loopback, in development)")
    else:
        for ip in ips:
            why = _refused_address(ip)
            if why:
                raise UnsafeWebhookUrl(f"the host resolves to {why}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme=scheme, host=host, port=port, address=addresses[0], path=path)


# --- Subscriptions ------------------------------------------------------------------------------

@dataclass
class Subscribed:
    subscription: WebhookSubscription
    secret: str


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def subscribe(*, user, url: str, events: list[str]) -> Subscribed:
    try:
        check_url(url)
    except UnsafeWebhookUrl as exc:
        raise InvalidRequest(f"This URL cannot receive webhooks: {exc}.", errors={"url": [f"{exc}."]}) from None
    if len(WebhookSubscription.objects.filter(user=user, active=True)[:conf.WEBHOOK_MAX_SUBSCRIPTIONS]) \
            >= conf.WEBHOOK_MAX_SUBSCRIPTIONS:
        raise InvalidRequest(f"At most {conf.WEBHOOK_MAX_SUBSCRIPTIONS} webhooks per user; delete one first.",
                               errors={"url": ["Too many webhooks."]})
    secret = new_secret()
    subscription = WebhookSubscription.objects.create(user=user, url=url, events=sorted(set(events)),
                                                      signing={"secret": secret}, created_at=timezone.now())
    return Subscribed(subscription, secret)


def unsubscribe(*, user, subscription_id: int) -> None:
    """Deleting a subscription drops its deliveries not yet made (cascade)."""
    deleted, _ = WebhookSubscription.objects.filter(user=user, pk=subscription_id).delete()
    if not deleted:
        raise WebhookNotFound(f"No webhook {subscription_id} of yours.")


def disable(subscription: WebhookSubscription, *, reason: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        WebhookSubscription.objects.filter(pk=subscription.pk, active=True).update(
            active=False, disabled_reason=reason[:300], disabled_at=now)
        WebhookDelivery.objects.filter(subscription=subscription, status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.FAILED, lease_until=None)


# --- Signing ------------------------------------------------------------------------------------

def sign(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, the key being the secret's base64 part."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def event_body(event: OrderEvent) -> bytes:
    created = event.created_at.astimezone(UTC)
    payload = {"id": event.pk, "type": event.type,
               "created_at": created.isoformat().replace("+00:00", "Z"), "data": event.data}
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


# --- Delivery -----------------------------------------------------------------------------------

@dataclass
class Outcome:
    status_code: int | None
    error: str
    latency_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _post(url: str, headers: dict, body: bytes) -> Outcome:
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target = check_url(url)
    except UnsafeWebhookUrl as exc:
        return Outcome(None, f"refused: {exc}", took())
    timeout = urllib3.Timeout(connect=conf.WEBHOOK_TIMEOUT_SECONDS, read=conf.WEBHOOK_TIMEOUT_SECONDS)
    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    if target.port not in (80, 443):
        host_header += f":{target.port}"
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(target.address, target.port, timeout=timeout, retries=False,
                                           server_hostname=target.host, assert_hostname=target.host,
                                           cert_reqs="CERT_REQUIRED")
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, timeout=timeout, retries=False)
    try:
        response = pool.urlopen("POST", target.path, body=body, redirect=False, preload_content=False,
                                headers={**headers, "Host": host_header, "Content-Type": "application/json",
                                         "User-Agent": "equity-orders-webhooks/1"})
        try:
            response.read(64 * 1024)
        finally:
            response.release_conn()
    except urllib3.exceptions.HTTPError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:500], took())
    finally:
        pool.close()
    code = response.status
    if 300 <= code < 400:
        return Outcome(code, "redirect not followed", took())
    return Outcome(code, "" if 200 <= code < 300 else f"HTTP {code}", took())


def backoff(attempt: int) -> timedelta:
    """Exponential with full jitter: about WEBHOOK_RETRY_BASE_SECONDS x 2^(attempt-1), at most an hour."""
    ceiling = min(conf.WEBHOOK_RETRY_BASE_SECONDS * 2 ** min(attempt - 1, 20), 3600.0)
    return timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))  # noqa: S311 - jitter, not secrecy


def due_deliveries(now: datetime | None = None):
    now = now or timezone.now()
    return WebhookDelivery.objects.filter(Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
                                          | Q(status=DeliveryStatus.SENDING, lease_until__lt=now))


def deliver(delivery_id: int, *, worker: str = "") -> str:
    """One attempt of one delivery, if it is due and this worker claims it; what happened."""
    now = timezone.now()
    lease = now + timedelta(seconds=2 * conf.WEBHOOK_TIMEOUT_SECONDS + 30)
    with transaction.atomic():
        if not due_deliveries(now).filter(pk=delivery_id).update(status=DeliveryStatus.SENDING, lease_until=lease,
                                                                 attempts=F("attempts") + 1):
            return "not due"
        delivery = WebhookDelivery.objects.select_related("subscription", "event").get(pk=delivery_id)
        attempt = WebhookAttempt.objects.create(delivery=delivery, number=delivery.attempts, worker=worker[:100],
                                                started_at=now)
    subscription = delivery.subscription
    if not subscription.active:
        _finish(delivery, DeliveryStatus.FAILED)
        _record(attempt, Outcome(None, "subscription disabled", 0))
        return "failed"
    body = event_body(delivery.event)
    timestamp = int(time.time())
    msg_id = str(delivery.event_id)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
               "webhook-signature": sign(secret=subscription.secret, msg_id=msg_id, timestamp=timestamp, body=body)}
    outcome = _post(subscription.url, headers, body)
    _record(attempt, outcome)
    if outcome.ok:
        _finish(delivery, DeliveryStatus.DELIVERED, delivered_at=timezone.now())
        WebhookSubscription.objects.filter(pk=subscription.pk).exclude(failing_since=None).update(failing_since=None)
        return "delivered"
    return _failed(delivery, subscription, outcome)


def _record(attempt: WebhookAttempt, outcome: Outcome) -> None:
    WebhookAttempt.objects.filter(pk=attempt.pk).update(status_code=outcome.status_code, error=outcome.error[:500],
                                                        latency_ms=outcome.latency_ms)


def _finish(delivery: WebhookDelivery, status: str, **extra) -> bool:
    """Only the claim that is still this attempt's may close it (a worker past its lease may not)."""
    return bool(WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING,
                                               attempts=delivery.attempts)
                .update(status=status, lease_until=None, **extra))


def _failed(delivery: WebhookDelivery, subscription: WebhookSubscription, outcome: Outcome) -> str:
    now = timezone.now()
    give_up_after = timedelta(hours=conf.WEBHOOK_RETRY_HOURS)
    WebhookSubscription.objects.filter(pk=subscription.pk, failing_since=None).update(failing_since=now)
    subscription.refresh_from_db(fields=["failing_since", "active"])
    if subscription.failing_since and subscription.failing_since <= now - give_up_after:
        _finish(delivery, DeliveryStatus.FAILED)
        disable(subscription, reason=f"Disabled at {now:%Y-%m-%d %H:%M}Z: every delivery failed for "
                                     f"{conf.WEBHOOK_RETRY_HOURS:g} h (last: {outcome.error or outcome.status_code}).")
        return "disabled"
    if delivery.created_at <= now - give_up_after:
        _finish(delivery, DeliveryStatus.FAILED)
        return "failed"
    next_at = now + backoff(delivery.attempts)
    _finish(delivery, DeliveryStatus.PENDING, next_attempt_at=next_at)
    return "retry"


def retry_delivery(delivery: WebhookDelivery) -> None:
    """An operator's retry (admin): due now, whatever it was, unless it is being sent."""
    WebhookDelivery.objects.filter(pk=delivery.pk).exclude(status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.PENDING, next_attempt_at=timezone.now(), lease_until=None)


def deliver_due(*, limit: int = 100, worker: str = "") -> dict:
    """Send what is due (first tries whose task was lost, retries, claims whose worker died)."""
    counts: dict[str, int] = {}
    ids = list(due_deliveries().order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    for delivery_id in ids:
        try:
            result = deliver(delivery_id, worker=worker)
        except Exception:  # a bug or a database fault with one delivery must not stop the others
            logger.exception("webhook delivery raised", extra={"delivery_id": delivery_id})
            result = "error"
        counts[result] = counts.get(result, 0) + 1
    return counts
