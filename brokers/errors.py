"""The domain errors: one exception per code of SPEC.md.

Services, rules and adapters raise these; the one exception handler renders them as
{"code", "detail"} with the class's HTTP status. Nobody hand-builds an error Response.
"""

from __future__ import annotations


class DomainError(Exception):
    code = "ERROR"
    status_code = 500
    default_detail = "Unexpected error."

    def __init__(self, detail: str | None = None, *, headers: dict | None = None, errors: dict | None = None,
                 risk_rule: str | None = None):
        self.detail = detail or self.default_detail
        self.headers = headers or {}
        self.errors = errors
        self.risk_rule = risk_rule  # the RiskManager rule that refused, stored on the audit row
        super().__init__(self.detail)


# 400
class InvalidRequest(DomainError):
    code, status_code, default_detail = "VALIDATION_ERROR", 400, "The request is invalid."


# 403
class BrokerNotConfigured(DomainError):
    code, status_code, default_detail = ("BROKER_NOT_CONFIGURED", 403,
                                         "No broker connection is configured for this asset class and environment.")


class CredentialsRefused(BrokerNotConfigured):
    """The broker refused the stored credentials; the connection is marked invalid."""

    default_detail = "The broker refused the stored credentials of this connection; reconnect it with valid keys."


class LiveNotEnabled(DomainError):
    code, status_code, default_detail = ("LIVE_NOT_ENABLED", 403,
                                         "Live trading is not enabled for this user; an operator must enable it.")


class TradingHalted(DomainError):
    code, status_code, default_detail = "TRADING_HALTED", 403, "Trading is halted."


# 404
class OrderNotFound(DomainError):
    code, status_code, default_detail = "ORDER_NOT_FOUND", 404, "Order not found."


# 409
class IdempotencyInProgress(DomainError):
    code, status_code, default_detail = ("IDEMPOTENCY_IN_PROGRESS", 409,
                                         "A request with this client_order_id is still being processed; retry shortly.")

    def __init__(self, detail: str | None = None, **kwargs):
        kwargs.setdefault("headers", {"Retry-After": "1"})
        super().__init__(detail, **kwargs)


# 413
class PayloadTooLarge(DomainError):
    """A request body over the documented limit (EQUITY_ORDERS["MAX_BODY_BYTES"]); it is not read past it."""

    code, status_code, default_detail = "PAYLOAD_TOO_LARGE", 413, "The request body is too large."


# 422
class IdempotencyConflict(DomainError):
    code, status_code, default_detail = ("VALIDATION_ERROR", 422,
                                         "client_order_id was already used with a different request.")


class KillSwitchInForce(DomainError):
    """A user's own kill switch before its `until`, or one an operator set: only an operator may release it."""

    code, status_code, default_detail = ("VALIDATION_ERROR", 422,
                                         "This kill switch stays in force; only an operator can release it now.")


class RiskRuleViolation(DomainError):
    code, status_code, default_detail = "RISK_RULE_VIOLATION", 422, "A risk rule refused the order."


class MarketClosed(DomainError):
    code, status_code, default_detail = "MARKET_CLOSED", 422, "The market is closed."


class InsufficientFunds(DomainError):
    code, status_code, default_detail = "INSUFFICIENT_FUNDS", 422, "Insufficient funds for this order."


class BrokerRejected(DomainError):
    code, status_code, default_detail = "BROKER_REJECTED", 422, "The broker rejected the request."


# 429
class RateLimitExceeded(DomainError):
    code, status_code, default_detail = "RATE_LIMIT_EXCEEDED", 429, "Too many orders; slow down."


class LiveDailyLimitExceeded(DomainError):
    code, status_code, default_detail = ("RATE_LIMIT_LIVE_DAILY", 429,
                                         "The daily limit of live orders is reached.")


# 502
class BrokerUnavailable(DomainError):
    """Nothing was placed: the broker could not be reached, or it is proven the order does not exist."""

    code, status_code, default_detail = "BROKER_UNAVAILABLE", 502, "The broker is unavailable."


class BrokerOutcomeUnknown(BrokerUnavailable):
    """The request may have reached the broker (read timeout, reset, 5xx, garbled reply).

    Raised by an adapter's place_order only; the service then looks the order up by its client id.
    """

    default_detail = "The broker's answer was lost; the order's outcome is unknown."


class DuplicateClientId(BrokerOutcomeUnknown):
    """The broker refused an order because our client id is already used, and does not show that order yet.

    Internal: raised by an adapter's place_order (Upbit `duplicated_identifier`, Alpaca "client_order_id
    must be unique"), never rendered as such. The id being taken proves an earlier send arrived (or was
    consumed), so it is never a rejection: a rejection would invite a retry under a new id, a second
    order. The service keeps the order pending, as for any unknown outcome.
    """

    default_detail = "The broker already has an order under this client id but does not show it yet."


# 503
class FeatureDisabled(DomainError):
    code, status_code, default_detail = "FEATURE_DISABLED", 503, "This feature is disabled."


class ServiceUnavailable(DomainError):
    code, status_code, default_detail = "SERVICE_UNAVAILABLE", 503, "A dependency of the service is unavailable."


class ConnectionNotFound(DomainError):
    code, status_code, default_detail = "NOT_FOUND", 404, "No such broker connection of yours."


class WebhookNotFound(DomainError):
    code, status_code, default_detail = "NOT_FOUND", 404, "No such webhook of yours."
