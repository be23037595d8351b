"""The root URL leads somewhere, and every documented path answers with and without a trailing slash."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client
from django.urls import Resolver404, resolve

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
# A path as the README and docs/ write it: in a URL, in backticks, or after a method.
_PATH_RE = re.compile(r"(?<![A-Za-z_./-])(/(?:api|admin)\b(?:/[A-Za-z0-9_{}.:-]*)*)")


def documented_paths() -> set[str]:
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = set()
    for text in texts:
        for match in _PATH_RE.finditer(text.read_text()):
            found.add(re.sub(r"\{[^}]*\}", "1", match.group(1)).rstrip("/.") or "/")
    return found


def schema_paths(client) -> set[str]:
    schema = client.get("/api/schema", HTTP_ACCEPT="application/json").json()
    return {re.sub(r"\{[^}]*\}", "1", p) for p in schema["paths"]}


def answers(client, path: str) -> bool:
    """Routed here, or redirected by Django to a routed path (the admin's own trailing slash)."""
    try:
        resolve(path)
        return True
    except Resolver404:
        resp = client.get(path)
        return resp.status_code in (301, 302) and bool(resolve(resp["Location"].split("?")[0]))


def test_the_readme_and_docs_name_the_paths_this_test_checks():
    paths = documented_paths()
    for expected in ("/api/docs", "/api/schema", "/api/auth/token", "/api/auth/token/refresh", "/api/equity/orders",
                     "/api/equity/positions", "/api/equity/account", "/api/brokers/accounts", "/admin"):
        assert expected in paths, sorted(paths)


def test_every_documented_and_schema_path_answers_with_and_without_a_trailing_slash(client):
    paths = documented_paths() | schema_paths(client)
    missing = [variant for path in sorted(paths) for variant in (path, path + "/") if not answers(client, variant)]
    assert missing == []


@pytest.mark.parametrize("path", ["/api/docs", "/api/docs/"])
def test_the_docs_render_with_and_without_the_slash(client, path):
    resp = client.get(path)
    assert resp.status_code == 200 and b"swagger-ui" in resp.content


@pytest.mark.parametrize("path", ["/api/schema", "/api/schema/"])
def test_the_schema_is_served_with_and_without_the_slash(client, path):
    resp = client.get(path, HTTP_ACCEPT="application/json")
    assert resp.status_code == 200 and "/api/equity/orders" in resp.json()["paths"]


@pytest.mark.parametrize("path", ["/api", "/api/", "/api/equity", "/api/equity/", "/api/brokers/", "/api/auth"])
def test_the_api_root_and_base_paths_lead_to_the_docs(client, path):
    resp = client.get(path)
    assert resp.status_code == 302 and resp["Location"] == "/api/docs"


def test_the_root_is_a_page_with_the_links_and_the_demo_logins(client, settings):
    settings.DEBUG = True
    UserFactory(username="demo")
    resp = client.get("/")
    assert resp.status_code == 200 and resp["Content-Type"].startswith("text/html")
    html = resp.content.decode()
    for link in ('href="/api/docs"', 'href="/api/schema"', 'href="/admin/"', 'href="/api/auth/token"',
                 'href="/api/auth/token/refresh"'):
        assert link in html
    assert "demo-pass-1234" in html and "<code>admin</code>" in html
    assert "docs/reference.md" in html
    assert "http://testserver/api/auth/token" in html


def test_the_root_shows_no_demo_password_in_production(client, settings):
    settings.DEBUG = False
    UserFactory(username="demo")
    resp = client.get("/")
    assert resp.status_code == 200
    assert b"demo-pass-1234" not in resp.content and b'href="/api/docs"' in resp.content


def test_the_root_shows_no_demo_logins_when_there_is_no_demo_user(client, settings):
    settings.DEBUG = True
    assert b"demo-pass-1234" not in client.get("/").content


def test_the_root_needs_no_login_and_ignores_a_stale_token(db):
    resp = Client(HTTP_AUTHORIZATION="Bearer expired.or.forged").get("/")
    assert resp.status_code == 200
