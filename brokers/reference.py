"""The product's own reference of answers: every error code with its status, every order status, every
list filter. One table, read by the OpenAPI schema (the `Error` component, the schema's description)
and checked against docs/reference.md and against the code that raises each code
(tests/api/test_reference.py), so a reader with only the repository, or only Swagger UI, knows them all.
"""

from __future__ import annotations

from typing import NamedTuple


class Answer(NamedTuple):
    status: int
    code: str
    meaning: str
    what_to_do: str


ERROR_CODES: tuple[Answer, ...] = (
    Answer(400, "VALIDATION_ERROR", "The body or a query parameter is invalid; `errors` names each field "
           "(an unknown field, such as a typo, is refused too), or the body is not valid JSON or is nested "
           "too deep.",
           "Fix the named fields and send again."),
    Answer(400, "BAD_REQUEST", "Django refused the request before the API saw it (for example a Host header "
           "that is not allowed).", "Check the URL and headers."),
    Answer(401, "NOT_AUTHENTICATED", "No token, a wrong username or password, or a token that is not valid. "
           "An expired access token says when it expired.",
           "Log in at POST /api/auth/token, or refresh at POST /api/auth/token/refresh."),
    Answer(403, "BROKER_NOT_CONFIGURED", "You have no broker connection for this asset class and environment, "
           "or the broker refused its stored credentials (the connection's status is then `invalid`).",
           "Connect one with POST /api/brokers/accounts (delete an invalid one first)."),
    Answer(403, "LIVE_NOT_ENABLED", "`live_mode: true`, but an operator has not enabled live trading for you.",
           "Ask an operator (`manage.py set_live_enabled <user> on`)."),
    Answer(403, "TRADING_HALTED", "A kill switch covers this placement.", "Release the switch, or wait until it ends."),
    Answer(403, "PERMISSION_DENIED", "Not allowed, or a session (browser) request without its CSRF token.",
           "Use a bearer token, or send the CSRF token with a session."),
    Answer(404, "ORDER_NOT_FOUND", "No such order of yours: it does not exist or another user placed it "
           "(the same answer, so ids cannot be probed).", "Check the id and the asset_class / live_mode."),
    Answer(404, "NOT_FOUND", "No such route, or no such broker connection or webhook of yours.", "Check the path."),
    Answer(405, "METHOD_NOT_ALLOWED", "The route exists but not with this HTTP method.", "Check the method."),
    Answer(406, "NOT_ACCEPTABLE", "The Accept header asks for a type the API does not send.",
           "Accept application/json."),
    Answer(409, "IDEMPOTENCY_IN_PROGRESS", "A request with this client_order_id is still running "
           "(header `Retry-After: 1`).", "Retry after a second: you get that request's order."),
    Answer(413, "PAYLOAD_TOO_LARGE", "The body is larger than the service takes (64 KiB by default).",
           "Send a smaller body: an order is well under 2 KB."),
    Answer(415, "UNSUPPORTED_MEDIA_TYPE", "The body is not JSON (curl without -H 'Content-Type: "
           "application/json' sends a form).", "Send the header Content-Type: application/json."),
    Answer(422, "VALIDATION_ERROR", "This client_order_id was already used with a different request body.",
           "Use a new client_order_id for a new order."),
    Answer(422, "RISK_RULE_VIOLATION", "A risk rule refused the order; the detail names the rule (`daily_loss`, "
           "`trade_risk`) and its numbers.", "Reduce the size, add a protective stop, or wait for a new day."),
    Answer(422, "MARKET_CLOSED", "The market of the asset class is closed (rule `market_hours`); the detail "
           "names the calendar and the next open.", "Send it when the market is open."),
    Answer(422, "INSUFFICIENT_FUNDS", "Not enough buying power, or a sell of more than is held (no shorting).",
           "Reduce the quantity."),
    Answer(422, "BROKER_REJECTED", "The broker refused the request (unsupported order type, time in force or "
           "symbol; a cancel of an order that is already final).", "Read the detail; change the order."),
    Answer(429, "RATE_LIMIT_EXCEEDED", "More placements this minute than your limit, 30 by default, or too "
           "many failed logins (header `Retry-After`).",
           "Wait the seconds of Retry-After."),
    Answer(429, "RATE_LIMIT_LIVE_DAILY", "The daily cap of live placements is reached (header `Retry-After`).",
           "Wait for the next UTC day."),
    Answer(500, "INTERNAL_ERROR", "A bug: never expected.", "Report it with the response's X-Request-ID."),
    Answer(500, "ERROR", "Any other failure without a code of its own: never expected.",
           "Report it with the response's X-Request-ID."),
    Answer(502, "BROKER_UNAVAILABLE", "The broker did not answer; nothing was placed (or it is proven absent), "
           "so a retry with the same client_order_id is a new attempt.", "Retry later."),
    Answer(503, "FEATURE_DISABLED", "The feature flag of this mode (paper or live) is off.",
           "Ask an operator; reads and cancels keep working."),
    Answer(503, "SERVICE_UNAVAILABLE", "The service's own database or shared cache is unreachable; no order was "
           "sent.", "Retry shortly."),
)

ORDER_STATUSES: tuple[tuple[str, str], ...] = (
    ("pending", "sent, not yet acknowledged, or the broker's answer was lost (HTTP 202); looked up again on GET, "
                "on a repeat of the request and by reconcile_orders"),
    ("accepted", "live at the broker"),
    ("partially_filled", "part of qty filled (filled_qty, avg_fill_price)"),
    ("filled", "all of qty filled"),
    ("canceled", "canceled by you, or the rest of an ioc/fok order"),
    ("expired", "a day order at the session's close"),
    ("rejected", "refused by the broker, or proven never placed"),
)

LIST_FILTERS: tuple[tuple[str, str], ...] = (
    ("pending", "pending"),
    ("open", "accepted, partially_filled"),
    ("filled", "filled"),
    ("canceled", "canceled, expired"),
    ("rejected", "rejected"),
)


def describe_status(status: int) -> str:
    """An operation's error response: each code it may carry, with its meaning (markdown)."""
    return "\n\n".join(f"`{a.code}`: {a.meaning}" for a in ERROR_CODES if a.status == status)


def codes_by_status() -> str:
    """One line: every code, grouped by HTTP status (the Error component's `code`)."""
    statuses = sorted({a.status for a in ERROR_CODES})
    return "; ".join(f"{s}: " + ", ".join(a.code for a in ERROR_CODES if a.status == s) for s in statuses)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def codes_table() -> str:
    rows = [f"| {a.status} | `{a.code}` | {_cell(a.meaning)} | {_cell(a.what_to_do)} |" for a in ERROR_CODES]
    return "\n".join(["| status | code | when | what to do |", "|---|---|---|---|", *rows])


def statuses_table() -> str:
    rows = [f"| `{status}` | {meaning} |" for status, meaning in ORDER_STATUSES]
    return "\n".join(["| status | meaning |", "|---|---|", *rows])


def filters_table() -> str:
    rows = [f"| `{name}` | {', '.join(f'`{s}`' for s in statuses.split(', '))} |" for name, statuses in LIST_FILTERS]
    return "\n".join(["| `status=` | matches |", "|---|---|", *rows])


def schema_description() -> str:
    """Markdown for the OpenAPI document's description: Swagger UI shows it above the operations."""
    return "\n\n".join([
        "Every error is `{\"code\": \"<CODE>\", \"detail\": \"<sentence>\"}`; validation errors add "
        "`\"errors\": {field: [messages]}`. Every response carries `X-Request-ID`, the service's id of the "
        "request: quote it when reporting a problem.",
        "### Error codes", codes_table(),
        "### Order statuses", statuses_table(),
        "### The list's status filter", filters_table(),
        "A repeat of a `client_order_id` with the same body answers 200 with the stored order and the header "
        "`Idempotent-Replayed: true`: never a second order. The full reference is docs/reference.md in the "
        "repository.",
    ])


def add_reference_to_schema(result, generator, request, public):
    """drf-spectacular postprocessing hook: the reference under the host's own description."""
    info = result.setdefault("info", {})
    info["description"] = "\n\n".join(filter(None, [info.get("description", ""), schema_description()]))
    return result


if __name__ == "__main__":  # `python brokers/reference.py`: the tables of docs/reference.md
    print(codes_table(), statuses_table(), filters_table(), sep="\n\n")
