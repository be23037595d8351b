"""The product carries its own reference: every code, status and field, in the schema and in docs/.

A reader with only the repository (docs/reference.md, linked from the README) or only Swagger UI
(the schema's descriptions) must find every code the service can answer, with its HTTP status.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rest_framework import exceptions

import brokers.errors
from brokers.api import _DRF_CODES
from brokers.reference import ERROR_CODES, LIST_FILTERS, ORDER_STATUSES, codes_table, filters_table, statuses_table
from brokers.types import OrderStatus
from equity.selectors import STATUS_GROUPS
from equity.serializers import OrderResponse, PlaceOrderRequest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reference.md"
DOCUMENTED = {(a.status, a.code) for a in ERROR_CODES}


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def answers_in_the_code() -> set[tuple[int, str]]:
    """(status, code) of every error the code base can render."""
    from brokers.middleware import _STATUS_CODES

    found = {(err.status_code, err.code) for err in _subclasses(brokers.errors.DomainError)}
    for exc_class, code in _DRF_CODES.items():
        status = 401 if issubclass(exc_class, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)) \
            else exc_class.status_code
        found.add((status, code))
    found |= {(status, code) for status, code in _STATUS_CODES.items()}
    found |= {(500, "ERROR"), (503, "SERVICE_UNAVAILABLE"), (500, "INTERNAL_ERROR")}  # handler/middleware fallbacks
    return found


def test_every_code_the_service_can_answer_is_in_the_reference_with_its_status():
    assert answers_in_the_code() - DOCUMENTED == set()


def test_the_reference_lists_no_code_that_nothing_answers():
    assert DOCUMENTED - answers_in_the_code() == set()


def test_order_statuses_and_list_filters_are_the_services_own():
    assert [name for name, _ in ORDER_STATUSES] == [s.value for s in OrderStatus]
    assert {name: statuses.split(", ") for name, statuses in LIST_FILTERS} == \
        {name: [s.value for s in group] for name, group in STATUS_GROUPS.items()}


def test_the_docs_page_carries_the_tables_as_the_code_has_them():
    text = DOC.read_text()
    for table in (codes_table(), statuses_table(), filters_table()):
        assert table in text, "docs/reference.md is stale: paste the output of `python brokers/reference.py`"


def test_the_docs_page_names_every_request_and_response_field():
    text = DOC.read_text()
    for serializer in (PlaceOrderRequest(), OrderResponse()):
        for name in serializer.fields:
            assert f"`{name}`" in text, name
    from equity.serializers import OrderMetadata

    for name in OrderMetadata().fields:
        assert f"`{name}`" in text, name
    for field in ("bracket.stop_loss", "take_profit", "stop_loss_limit", "Idempotent-Replayed", "Retry-After",
                  "X-Request-ID", "metadata.legs", "metadata.parent_order_id"):
        assert field in text, field


def test_the_readme_links_the_reference_and_not_a_file_outside_the_repository():
    readme = (ROOT / "README.md").read_text()
    assert "(docs/reference.md)" in readme
    assert "../shared" not in readme and "SPEC.md" not in readme


@pytest.fixture
def schema(client, db):
    return client.get("/api/schema", HTTP_ACCEPT="application/json").json()


def test_the_schema_description_carries_every_code_status_and_filter(schema):
    description = schema["info"]["description"]
    for answer in ERROR_CODES:
        assert f"| {answer.status} | `{answer.code}` |" in description, answer.code
    for name, _ in ORDER_STATUSES:
        assert f"| `{name}` |" in description
    assert "Idempotent-Replayed: true" in description


def test_each_error_response_of_each_operation_names_its_codes_with_that_status(schema):
    seen = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if not status.startswith(("4", "5")):
                    continue
                named = set(re.findall(r"`([A-Z][A-Z_]+)`", response["description"]))
                assert named, (method, path, status, response["description"])
                assert named <= {a.code for a in ERROR_CODES if a.status == int(status)}, (method, path, status)
                seen += 1
    assert seen > 40


def test_the_error_component_lists_every_code(schema):
    code = schema["components"]["schemas"]["Error"]["properties"]["code"]
    for answer in ERROR_CODES:
        assert re.search(rf"\b{answer.code}\b", code["description"]), answer.code


def test_the_order_status_field_explains_each_status(schema):
    status_doc = schema["components"]["schemas"]["OrderResponse"]["properties"]["status"]["description"]
    for name, meaning in ORDER_STATUSES:
        assert f"`{name}`: {meaning}" in status_doc, name


def test_swagger_ui_renders_the_description_from_the_schema(client, db):
    """Swagger UI reads /api/schema (which holds the reference above) from our own static files."""
    page = client.get("/api/docs").content.decode()
    assert "/api/schema" in page and "swagger-ui" in page
