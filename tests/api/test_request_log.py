"""One log line per request, at the level that says who must act; no refusal printed twice."""

from __future__ import annotations

import logging

import pytest
from waffle.models import Flag

from audit.models import BrokerOrderEvent
from tests.equity.helpers import assert_error, crypto_market, place

pytestmark = pytest.mark.django_db

REQUEST_LOGGER = "equity.requests"


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


def request_lines(log):
    return [r for r in log.records if r.name == REQUEST_LOGGER]


def the_one_line(log) -> logging.LogRecord:
    lines = request_lines(log)
    assert len(lines) == 1, [r.getMessage() for r in lines]
    return lines[0]


def lines_at_or_above(log, level) -> list[str]:
    return [f"{r.name} {r.levelname} {r.getMessage()}" for r in log.records if r.levelno >= level]


def test_a_placed_order_is_one_info_line_with_method_path_status_duration_user_and_request_id(
        api_client, sim_crypto, log):
    log.clear()
    resp = place(api_client, crypto_market())
    assert resp.status_code == 201
    line = the_one_line(log)
    assert line.levelno == logging.INFO
    assert (line.method, line.path, line.status, line.user_id) == ("POST", "/api/equity/orders", 201,
                                                                    api_client.user.pk)
    assert line.duration_ms >= 0 and line.code is None
    message = line.getMessage()
    assert message.startswith("POST /api/equity/orders 201 ") and "ms " in message
    assert f"user={api_client.user.pk}" in message and f"request_id={line.request_id}" in message
    # one id for the log line, the response header and the audit rows
    assert resp["X-Request-ID"] == line.request_id
    assert set(BrokerOrderEvent.objects.values_list("request_id", flat=True)) == {line.request_id}


def test_the_request_id_is_the_servers_own_and_a_clients_is_logged_beside_it(api_client, sim_crypto, log):
    resp = api_client.post("/api/equity/orders", crypto_market(client_order_id="rid-1"), format="json",
                           HTTP_X_REQUEST_ID="trace-42")
    line = the_one_line(log)
    assert resp["X-Request-ID"] == line.request_id != "trace-42"
    assert line.client_request_id == "trace-42" and "client_request_id=trace-42" in line.getMessage()
    rows = BrokerOrderEvent.objects.filter(client_order_id="rid-1")
    assert {(r.request_id, r.client_request_id) for r in rows} == {(line.request_id, "trace-42")}


@pytest.mark.parametrize("sent", ["bad id", "x" * 65, "<script>", "a\tb"])
def test_a_client_request_id_that_is_not_short_and_plain_is_not_logged(api_client, sim_crypto, log, sent):
    resp = api_client.get("/api/equity/orders", {"asset_class": "crypto"}, HTTP_X_REQUEST_ID=sent)
    line = the_one_line(log)
    assert line.client_request_id is None and sent not in line.getMessage()
    assert resp["X-Request-ID"] == line.request_id and len(line.request_id) == 32


@pytest.mark.parametrize("path", ["/api/equity/orders/0.5/extra", "/api/equity/orders/nope?asset_class=crypto"])
def test_a_404_is_one_info_line_and_nothing_else(api_client, sim_crypto, log, path):
    log.clear()
    assert api_client.get(path).status_code == 404
    line = the_one_line(log)
    assert line.levelno == logging.INFO and line.status == 404 and line.code in ("NOT_FOUND", "ORDER_NOT_FOUND")
    assert lines_at_or_above(log, logging.WARNING) == []


def test_a_validation_error_is_info_with_its_code(api_client, sim_crypto, log):
    log.clear()
    assert place(api_client, {"asset_class": "crypto"}).status_code == 400
    line = the_one_line(log)
    assert line.levelno == logging.INFO and line.code == "VALIDATION_ERROR"
    assert line.getMessage().endswith(" code=VALIDATION_ERROR")
    assert lines_at_or_above(log, logging.WARNING) == []


def test_no_token_is_one_info_line_without_a_user(client, db, log):
    log.clear()
    assert client.get("/api/equity/orders?asset_class=crypto").status_code == 401
    line = the_one_line(log)
    assert line.levelno == logging.INFO and line.user_id is None and "user=-" in line.getMessage()
    assert lines_at_or_above(log, logging.WARNING) == []


def test_a_disabled_feature_is_a_warning_not_an_error(api_client, sim_crypto, log):
    from django.core.cache import caches

    flag = Flag.objects.get(name="FEATURE_EQUITY_PAPER")
    flag.everyone = False
    flag.save()
    caches["waffle"].clear()
    log.clear()
    assert_error(place(api_client, crypto_market()), 503, "FEATURE_DISABLED")
    line = the_one_line(log)
    assert line.levelno == logging.WARNING and line.code == "FEATURE_DISABLED"
    assert lines_at_or_above(log, logging.ERROR) == []
    assert lines_at_or_above(log, logging.WARNING) == [f"{REQUEST_LOGGER} WARNING {line.getMessage()}"]


def test_a_rate_limit_refusal_is_a_warning(api_client, sim_crypto, equity_orders, log):
    equity_orders.RATE_LIMIT_ORDERS = "1/m"
    place(api_client, crypto_market())
    log.clear()
    assert_error(place(api_client, crypto_market()), 429, "RATE_LIMIT_EXCEEDED")
    assert the_one_line(log).levelno == logging.WARNING
    assert lines_at_or_above(log, logging.ERROR) == []


def test_a_bug_is_an_error_line_plus_its_traceback_once(api_client, monkeypatch, log):
    from equity import selectors

    def boom(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(selectors, "positions_for_user", boom)
    api_client.raise_request_exception = False
    log.clear()
    assert_error(api_client.get("/api/equity/positions", {"asset_class": "crypto"}), 500, "INTERNAL_ERROR")
    line = the_one_line(log)
    assert line.levelno == logging.ERROR and line.code == "INTERNAL_ERROR"
    with_traceback = [r for r in log.records if r.exc_info]
    assert len(with_traceback) == 1 and "a bug" in str(with_traceback[0].exc_info[1])
    assert len(lines_at_or_above(log, logging.ERROR)) == 2  # the request line and the one traceback


def test_an_admin_page_is_logged_with_the_operator(client, db, log):
    from tests.factories import UserFactory

    operator = UserFactory(username="op", is_staff=True, is_superuser=True)
    client.force_login(operator)
    log.clear()
    assert client.get("/admin/").status_code == 200
    line = the_one_line(log)
    assert (line.path, line.status, line.user_id) == ("/admin/", 200, operator.pk)


def test_djangos_own_request_loggers_keep_only_tracebacks():
    """django.request (every 4xx/5xx) and django.server (every request under runserver) would repeat the line."""
    record = logging.LogRecord("django.server", logging.WARNING, __file__, 1, '"GET /x HTTP/1.1" 404 0', (), None)
    for name in ("django.request", "django.server"):
        assert logging.getLogger(name).filter(record) is False, name
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        failing = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "Internal Server Error", (),
                                    sys.exc_info())
    assert logging.getLogger("django.request").filter(failing)


@pytest.mark.parametrize("status,code,level", [
    (200, None, logging.INFO), (201, None, logging.INFO), (400, "VALIDATION_ERROR", logging.INFO),
    (401, "NOT_AUTHENTICATED", logging.INFO), (403, "LIVE_NOT_ENABLED", logging.INFO),
    (404, "ORDER_NOT_FOUND", logging.INFO), (409, "IDEMPOTENCY_IN_PROGRESS", logging.INFO),
    (415, "UNSUPPORTED_MEDIA_TYPE", logging.INFO), (422, "RISK_RULE_VIOLATION", logging.INFO),
    (429, "RATE_LIMIT_EXCEEDED", logging.WARNING), (429, "RATE_LIMIT_LIVE_DAILY", logging.WARNING),
    (502, "BROKER_UNAVAILABLE", logging.WARNING), (503, "FEATURE_DISABLED", logging.WARNING),
    (503, "SERVICE_UNAVAILABLE", logging.ERROR), (500, "INTERNAL_ERROR", logging.ERROR), (500, None, logging.ERROR),
])
def test_the_level_of_each_answer(status, code, level):
    from brokers.request_log import level_for

    assert level_for(status, code) == level
