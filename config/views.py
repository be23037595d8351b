"""The demo site's front page: where `make run` sends a newcomer (it printed http://127.0.0.1:8000/)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from brokers.management.commands.seed_demo import DEMO_PASSWORD, demo_logins

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Equity Orders</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}}
code,pre{{background:#f3f3f3;padding:.1rem .3rem}}pre{{padding:.6rem;overflow-x:auto}}</style></head>
<body><h1>Equity Orders</h1>
<p>Route orders to your own paper or live broker account, behind five gates.</p>
<ul>{links}</ul>
{logins}
<h2>First request</h2>
<pre>curl -s -X POST {origin}{token} -H 'Content-Type: application/json' \\
  -d '{{"{login_field}": "{demo}", "password": "…"}}'</pre>
<p>Every error code, order status and field: <code>docs/reference.md</code> in the repository, and the
descriptions in the API docs.</p>
</body></html>"""


def home(request):
    links = format_html_join("", '<li><a href="{}">{}</a> — {}</li>', [
        (reverse("docs"), reverse("docs"), "interactive API docs (Swagger UI), with every code"),
        (reverse("schema"), reverse("schema"), "the OpenAPI 3 schema"),
        (reverse("admin:index"), reverse("admin:index"), "admin: the audit log, flags, broker connections"),
        (reverse("token_obtain_pair"), f"POST {reverse('token_obtain_pair')}", "a token pair (username, password)"),
        (reverse("token_refresh"), f"POST {reverse('token_refresh')}", "a new access token (refresh)"),
    ])
    User = get_user_model()
    demo, operator = demo_logins(User)
    logins = ""
    if settings.DEBUG and User.objects.filter(**{User.USERNAME_FIELD: demo}).exists():
        # Development only: the demo accounts that `make run` seeds (manage.py seed_demo).
        logins = format_html("<h2>Demo logins</h2><p>Trader <code>{}</code> / <code>{}</code> (simulator "
                             "connections for us_equity, kr_equity and crypto); operator <code>{}</code> / "
                             "<code>{}</code> for admin.</p>", demo, DEMO_PASSWORD, operator, DEMO_PASSWORD)
    page = format_html(_PAGE, links=links, logins=logins, origin=request.build_absolute_uri("/").rstrip("/"),
                       token=reverse("token_obtain_pair"), demo=demo, login_field=User.USERNAME_FIELD)
    return HttpResponse(page)
