"""record_order_event(): the only writer of BrokerOrderEvent rows."""

from __future__ import annotations

import ipaddress
import re
import uuid
from dataclasses import dataclass, field

from audit.models import BrokerOrderEvent, EventType

# Account numbers count as secrets under each broker's name for them: account_no (ours, KIS),
# account_number (Alpaca), CANO (KIS's wire field).
_SECRET_KEY_RE = re.compile(r"(secret|key|token|password|authorization|account_?n(o|um)|^cano$|credential|signature)",
                            re.I)


@dataclass(frozen=True)
class RequestMeta:
    """Who asked, from where: carried from the view into every audit row."""

    request_id: str = ""
    client_ip: str | None = None
    body: dict | None = None
    http_request: object | None = field(default=None, compare=False, repr=False)  # for waffle and ratelimit

    @classmethod
    def of(cls, request) -> RequestMeta:
        """From the client's own headers: an X-Forwarded-For that is not an IP address, or an
        X-Request-ID that is not 1 to 64 printable ASCII characters, is ignored rather than failing
        the audit row (and with it the order)."""
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        ip = _ip_or_none(forwarded.split(",")[0].strip()) or _ip_or_none(request.META.get("REMOTE_ADDR"))
        # The request log's middleware has already chosen this request's id: the audit rows, the log
        # line and the X-Request-ID response header then agree.
        request_id = getattr(request, "request_id", None) or request.META.get("HTTP_X_REQUEST_ID", "")
        if not _REQUEST_ID_RE.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        body = request.data if isinstance(getattr(request, "data", None), dict) else None
        return cls(request_id=request_id, client_ip=ip, body=scrub(dict(body)) if body is not None else None,
                   http_request=getattr(request, "_request", request))


_REQUEST_ID_RE = re.compile(r"[\x21-\x7e]{1,64}")


def _ip_or_none(value: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(value)) if value else None
    except ValueError:
        return None


def scrub(value):
    """A copy of a JSON-like value with anything that looks secret removed."""
    if isinstance(value, dict):
        return {k: ("[removed]" if _SECRET_KEY_RE.search(str(k)) and k not in _SAFE_KEYS else scrub(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# Fields of an order that match the secret pattern but are not secret.
_SAFE_KEYS = {"client_order_id", "broker_order_id", "broker_client_id"}


def record_order_event(*, user_id: int, event_type: EventType, meta: RequestMeta | None = None,
                       error=None, first_live_order: bool = False, broker_reply: dict | None = None,
                       **fields) -> BrokerOrderEvent:
    """Append one audit row. Call it inside the transaction that changes the order's own state."""
    meta = meta or RequestMeta()
    if error is not None:
        fields.setdefault("error_code", error.code)
        fields.setdefault("error_detail", error.detail[:2000])
        if getattr(error, "risk_rule", None):
            fields.setdefault("risk_rule", error.risk_rule)
    return BrokerOrderEvent.objects.create(
        user_id=user_id, event_type=event_type, request_id=meta.request_id, client_ip=meta.client_ip,
        request_body=meta.body or {}, broker_reply=scrub(broker_reply or {}), first_live_order=first_live_order,
        **{k: ("" if v is None and k not in _NULLABLE else v) for k, v in fields.items()})


_NULLABLE = {"qty", "report_uuid", "client_ip"}
