"""Admin: staff only; the audit log read-only for everyone; a stored secret is never rendered.

tests/audit/test_append_only.py already covers a superuser's add (403), delete (403) and change
(ignored) of an audit event and a non-staff user on the audit list; this adds the rest.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.core import mail
from django.db import OperationalError, connection
from django.urls import reverse
from django.utils import timezone

from audit.models import BrokerOrderEvent, EventType
from audit.services import record_order_event
from brokers.models import BrokerAccount, KisAccessToken
from tests.factories import BrokerAccountFactory, UserFactory

pytestmark = pytest.mark.django_db

ALPACA = {"api_key": "PKADMINKEYID0000000042", "secret_key": "adminStoredSecretValue00000000000000042"}
KIS = {"app_key": "PSadminAppKey000000000000000000000042", "app_secret": "adminKisSecret" + "V3" * 80,
       "account_no": "73920418-01"}
KIS_TOKEN = "kis-admin-access-token-0000000000000000000042"
NEW = {"api_key": "PKREPLACEDKEY000000042", "secret_key": "replacementSecretTypedIntoAdmin000000042"}


def stored_secrets() -> list[str]:
    return [*ALPACA.values(), *KIS.values(), "73920418", KIS_TOKEN, *NEW.values()]


def assert_no_secret(resp) -> None:
    page = resp.content.decode()
    shown = [s for s in stored_secrets() if s in page]
    assert not shown, f"{resp.request['PATH_INFO']} renders {shown}"


@pytest.fixture
def connections(user):
    alpaca = BrokerAccountFactory(user=user, asset_class="us_equity", exchange="alpaca", credentials=ALPACA,
                                  key_hint=ALPACA["api_key"][-4:])
    kis = BrokerAccountFactory(user=user, asset_class="kr_equity", exchange="kis", credentials=KIS,
                               key_hint=KIS["app_key"][-4:])
    KisAccessToken.objects.create(environment="paper", app_key_digest="a" * 64, token={"access_token": KIS_TOKEN},
                                  expires_at=timezone.now() + timedelta(hours=20))
    return alpaca, kis


@pytest.fixture
def event(user):
    return record_order_event(user_id=user.pk, event_type=EventType.PLACED, client_order_id="k1", symbol="AAPL")


@pytest.fixture
def root(client, django_user_model):
    superuser = django_user_model.objects.create_superuser("root", "root@example.com", "pw-123456789")
    client.force_login(superuser)
    return client


def change_url(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


# --- who may open it ----------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["/admin/", "/admin/brokers/brokeraccount/", "/admin/brokers/brokeraccount/add/",
                                 "CONNECTION_CHANGE", "EVENT_CHANGE"])
def test_a_non_staff_user_is_sent_to_the_login_page(client, user, connections, event, url):
    url = {"CONNECTION_CHANGE": change_url(connections[0]), "EVENT_CHANGE": change_url(event)}.get(url, url)
    client.force_login(user)
    resp = client.get(url)
    assert resp.status_code == 302 and resp["Location"].startswith("/admin/login/")


def test_a_non_staff_user_cannot_post_credentials_through_the_connection_admin(client, user, connections):
    client.force_login(user)
    alpaca = connections[0]
    resp = client.post(change_url(alpaca), {"user": user.pk, "asset_class": "us_equity", "exchange": "alpaca",
                                            "environment": "paper", "label": "", "status": "active",
                                            "new_credentials": json.dumps(NEW)})
    assert resp.status_code == 302 and resp["Location"].startswith("/admin/login/")
    alpaca.refresh_from_db()
    assert alpaca.credentials == ALPACA


def test_staff_without_permissions_get_403_on_connections_and_audit_events(client, connections, event):
    staff = UserFactory(username="intern", is_staff=True)
    client.force_login(staff)
    for url in ["/admin/brokers/brokeraccount/", change_url(connections[0]), "/admin/audit/brokerorderevent/",
                change_url(event)]:
        assert client.get(url).status_code == 403, url


def test_staff_with_every_audit_permission_still_cannot_add_change_or_delete_events(client, event):
    staff = UserFactory(username="auditor", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="audit"))
    client.force_login(staff)
    assert client.get("/admin/audit/brokerorderevent/").status_code == 200
    assert client.get(change_url(event)).status_code == 200
    assert client.get("/admin/audit/brokerorderevent/add/").status_code == 403
    assert client.post(reverse("admin:audit_brokerorderevent_delete", args=[event.pk]), {"post": "yes"}) \
        .status_code == 403
    assert BrokerOrderEvent.objects.filter(pk=event.pk).exists()


# --- the audit log stays read-only, superusers included -----------------------------------------------

def test_the_audit_change_page_has_no_inputs_and_no_save_or_delete(root, event):
    page = root.get(change_url(event)).content.decode()
    assert 'name="_save"' not in page and 'name="_continue"' not in page
    assert 'name="symbol"' not in page and "/delete/" not in page


def test_the_audit_list_offers_no_bulk_delete_and_refuses_one_posted_anyway(root, event):
    listing = root.get("/admin/audit/brokerorderevent/")
    assert b"delete_selected" not in listing.content
    resp = root.post("/admin/audit/brokerorderevent/", {"action": "delete_selected", "_selected_action": [event.pk],
                                                       "post": "yes"})
    assert resp.status_code in (200, 302)
    assert BrokerOrderEvent.objects.filter(pk=event.pk).exists()


def test_the_admin_site_gives_the_audit_model_no_write_permission_for_a_superuser(rf, django_user_model, event):
    superuser = django_user_model.objects.create_superuser("root2", "r2@example.com", "pw-123456789")
    request = rf.get("/admin/")
    request.user = superuser
    model_admin = admin.site._registry[BrokerOrderEvent]
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, event)
    assert not model_admin.has_delete_permission(request, event)
    assert "delete_selected" not in model_admin.get_actions(request)


# --- the connection admin never shows a stored secret ---------------------------------------------------

def test_the_connection_list_search_and_change_form_never_render_a_stored_secret(root, connections):
    alpaca, kis = connections
    for url in ["/admin/brokers/brokeraccount/", "/admin/brokers/brokeraccount/?q=alice", change_url(alpaca),
                change_url(kis), reverse("admin:brokers_brokeraccount_history", args=[alpaca.pk]),
                reverse("admin:brokers_brokeraccount_delete", args=[kis.pk])]:
        resp = root.get(url)
        assert resp.status_code == 200, url
        assert_no_secret(resp)
    assert ALPACA["api_key"][-4:] in root.get("/admin/brokers/brokeraccount/").content.decode()  # the hint only


def test_searching_the_connection_list_by_a_secret_finds_nothing(root, connections):
    for secret in [ALPACA["api_key"], ALPACA["secret_key"], KIS["account_no"]]:
        page = root.get("/admin/brokers/brokeraccount/", {"q": secret}).content.decode()
        assert "0 broker accounts" in page or "0 results" in page, secret


def test_a_refused_form_does_not_echo_the_credentials_typed_into_it(root, connections, user):
    alpaca = connections[0]
    resp = root.post(change_url(alpaca), {"user": user.pk, "asset_class": "us_equity", "exchange": "alpaca",
                                          "environment": "not-an-environment", "label": "", "status": "active",
                                          "new_credentials": json.dumps(NEW)})
    assert resp.status_code == 200 and b"errorlist" in resp.content
    assert_no_secret(resp)
    alpaca.refresh_from_db()
    assert alpaca.credentials == ALPACA


def test_credentials_replaced_in_admin_are_stored_encrypted_and_never_shown_or_logged(root, connections, user):
    alpaca = connections[0]
    resp = root.post(change_url(alpaca), {"user": user.pk, "asset_class": "us_equity", "exchange": "alpaca",
                                          "environment": "paper", "label": "rotated", "status": "invalid",
                                          "new_credentials": json.dumps(NEW)})
    assert resp.status_code == 302, resp.content[:500]
    alpaca.refresh_from_db()
    assert alpaca.credentials == NEW and alpaca.key_hint == NEW["api_key"][-4:] and alpaca.status == "active"
    with connection.cursor() as cur:
        cur.execute("SELECT credentials FROM brokers_brokeraccount WHERE id = %s", [alpaca.pk])
        raw = cur.fetchone()[0]
    assert not any(s in raw for s in stored_secrets())
    history = " ".join(e.change_message + e.object_repr for e in LogEntry.objects.all())
    assert not any(s in history for s in stored_secrets())
    for url in [change_url(alpaca), reverse("admin:brokers_brokeraccount_history", args=[alpaca.pk]),
                "/admin/brokers/brokeraccount/"]:
        assert_no_secret(root.get(url))


def test_every_admin_page_of_every_registered_model_is_free_of_secrets(root, connections, event):
    """A model registered later (a KIS token admin, say) is searched too."""
    visited = 0
    for model in admin.site._registry:
        meta = model._meta
        assert_no_secret(root.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")))
        for obj in model._default_manager.all()[:5]:
            resp = root.get(change_url(obj))
            assert resp.status_code == 200, change_url(obj)
            assert_no_secret(resp)
            visited += 1
    assert visited >= 3  # the two connections and the event at least
    assert BrokerAccount in admin.site._registry and KisAccessToken not in admin.site._registry


@pytest.mark.parametrize("adding", [False, True], ids=["change", "add"])
def test_a_failed_save_mails_the_operators_a_report_without_the_typed_credentials(root, connections, user, settings,
                                                                                   monkeypatch, adding):
    """The database goes away mid-save: Django mails ADMINS the request, POST data included."""
    settings.ADMINS = [("Ops", "ops@example.com")]

    def database_gone(self, *args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(BrokerAccount, "save", database_gone)
    root.raise_request_exception = False
    url = reverse("admin:brokers_brokeraccount_add") if adding else change_url(connections[0])
    resp = root.post(url, {"user": user.pk, "asset_class": "crypto" if adding else "us_equity",
                           "exchange": "alpaca", "environment": "paper", "label": "", "status": "active",
                           "new_credentials": json.dumps(NEW)})
    assert resp.status_code == 500
    assert len(mail.outbox) == 1 and "new_credentials" in mail.outbox[0].body
    report = mail.outbox[0].body + repr(mail.outbox[0].alternatives)
    assert not [s for s in stored_secrets() if s in report]
