"""The operators' alert on a user's first live order: mail to ADMINS and a JSON webhook.

Sent from a background thread after the order's transaction commits, so a slow or dead
receiver never delays, fails or rolls back the order; failures are logged as warnings.
"""

from __future__ import annotations

import logging
import threading

import requests
from brokers.conf import conf
from django.core.mail import mail_admins

logger = logging.getLogger(__name__)


def _number(value):
    return float(value) if value is not None else None


def alert_body(order) -> dict:
    submitted = order.submitted_at
    return {
        "event": "first_live_order",
        # An integer for the usual integer key; a host whose user model has a UUID key gets its string.
        "user_id": order.user_id if isinstance(order.user_id, int) else str(order.user_id),
        "username": order.user.get_username(),
        "order_id": order.client_order_id,
        "broker_order_id": order.broker_order_id,
        "client_order_id": order.client_order_id,
        "asset_class": order.asset_class,
        "exchange": order.exchange,
        "symbol": order.symbol,
        "side": order.side,
        "qty": _number(order.qty),
        "submitted_at": submitted.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if submitted else None,
    }


def deliver_first_live_alert(body: dict) -> None:
    try:
        mail_admins(f"First live order by {body['username']}",
                    "\n".join(f"{k}: {v}" for k, v in body.items()), fail_silently=False)
    except Exception as exc:
        logger.warning("first-live-order mail failed: %s", exc.__class__.__name__)
    url = conf.EQUITY_ALERT_WEBHOOK_URL
    if not url:
        return
    try:
        reply = requests.post(url, json=body, timeout=conf.EQUITY_ALERT_TIMEOUT_SECONDS)
        if reply.status_code >= 300:
            logger.warning("first-live-order webhook answered %s", reply.status_code)
    except Exception as exc:  # whatever happens, the alert never escapes its thread
        logger.warning("first-live-order webhook failed: %s", exc.__class__.__name__)


def send_first_live_alert(order) -> threading.Thread:
    body = alert_body(order)  # built now, in the request's thread, from committed data
    thread = threading.Thread(target=deliver_first_live_alert, args=(body,), name="first-live-alert", daemon=True)
    thread.start()
    return thread
