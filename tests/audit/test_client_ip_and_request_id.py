"""The audit row's client_ip and request ids cannot be chosen by the client (issue 13, item 2).

client_ip is the peer (REMOTE_ADDR) unless TRUSTED_PROXY_COUNT or TRUSTED_PROXIES say which
X-Forwarded-For hops were written by our own proxies; then it is the right-most hop that was not.
request_id is always the server's own; a client's X-Request-ID is kept apart, in
client_request_id, and only if 1 to 64 of [A-Za-z0-9._:-].
"""

from __future__ import annotations

import re

import pytest
import requests
from rest_framework_simplejwt.tokens import RefreshToken

from audit.models import BrokerOrderEvent
from tests.equity.helpers import crypto_limit

pytestmark = pytest.mark.django_db

SPOOFED = "203.0.113.77"
PEER = "198.51.100.5"


def _place(client, key="ip-1", **headers):
    resp = client.post("/api/equity/orders", crypto_limit(client_order_id=key), format="json", **headers)
    assert resp.status_code == 201, resp.content
    events = list(BrokerOrderEvent.objects.filter(client_order_id=key).order_by("id"))
    assert [e.event_type for e in events] == ["submitted", "placed"]
    return events


def test_x_forwarded_for_sent_straight_to_the_service_is_not_the_client_ip(api_client, sim_crypto):
    events = _place(api_client, REMOTE_ADDR=PEER, HTTP_X_FORWARDED_FOR=SPOOFED)
    assert {e.client_ip for e in events} == {PEER}


@pytest.mark.parametrize("count,networks,peer,forwarded,expected", [
    # one proxy: the client is the hop it appended; whatever the client wrote before it is ignored
    (1, [], "10.0.0.2", f"{SPOOFED}, 198.51.100.9", "198.51.100.9"),
    (1, [], "10.0.0.2", "198.51.100.9", "198.51.100.9"),
    # two proxies
    (2, [], "10.0.0.3", f"{SPOOFED}, 198.51.100.9, 10.0.0.2", "198.51.100.9"),
    # fewer hops than proxies: every hop was written by a proxy; the left-most is the furthest one known
    (2, [], "10.0.0.3", "198.51.100.9", "198.51.100.9"),
    # proxies by address: the right-most hop outside them
    (0, ["10.0.0.0/8"], "10.0.0.2", f"{SPOOFED}, 198.51.100.9, 10.1.1.1", "198.51.100.9"),
    (0, ["10.0.0.0/8", "192.0.2.7"], "192.0.2.7", f"{SPOOFED}, 198.51.100.9, 10.1.1.1", "198.51.100.9"),
    (0, ["10.0.0.0/8"], "::ffff:10.0.0.2", f"{SPOOFED}, 198.51.100.9", "198.51.100.9"),
    (0, ["2001:db8::/32"], "2001:db8::1", "2001:db8:ffff::9, 2001:db9::9", "2001:db9::9"),
    # a peer that is not a trusted proxy came straight to us: its header proves nothing
    (0, ["10.0.0.0/8"], PEER, SPOOFED, PEER),
    # behind a proxy, no header: the proxy itself is all that is known
    (1, [], "10.0.0.2", "", "10.0.0.2"),
    # the hop a proxy vouches for is not an address: unknown, not the spoofed entry left of it
    (1, [], "10.0.0.2", f"{SPOOFED}, not-an-ip", None),
])
def test_behind_trusted_proxies_the_client_ip_is_the_right_most_untrusted_hop(
        api_client, sim_crypto, equity_orders, count, networks, peer, forwarded, expected):
    equity_orders.TRUSTED_PROXY_COUNT, equity_orders.TRUSTED_PROXIES = count, networks
    events = _place(api_client, REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)
    assert {e.client_ip for e in events} == {expected}


def test_the_server_makes_its_own_request_id_and_keeps_a_plain_client_one_apart(api_client, sim_crypto):
    first = _place(api_client, "rid-1", HTTP_X_REQUEST_ID="client-id.1:a_B")
    second = _place(api_client, "rid-2", HTTP_X_REQUEST_ID="client-id.1:a_B")
    for events in (first, second):
        assert {e.client_request_id for e in events} == {"client-id.1:a_B"}
        assert len({e.request_id for e in events}) == 1  # one request, one id on all its rows
        assert re.fullmatch(r"[0-9a-f]{32}", events[0].request_id)
    assert first[0].request_id != second[0].request_id


@pytest.mark.parametrize("sent", ["x" * 65, "has space", "<script>", "a/b", "ü", "a\tb", "id;DROP", "'quoted'"])
def test_a_client_request_id_that_is_not_short_and_plain_is_dropped(api_client, sim_crypto, sent):
    events = _place(api_client, HTTP_X_REQUEST_ID=sent)
    assert {e.client_request_id for e in events} == {""}
    assert all(re.fullmatch(r"[0-9a-f]{32}", e.request_id) for e in events)


@pytest.mark.django_db(transaction=True)
def test_over_a_real_loopback_server_the_peer_address_is_recorded(live_server, user, quotes):
    from tests.factories import BrokerAccountFactory

    BrokerAccountFactory(user=user, asset_class="crypto")
    token = RefreshToken.for_user(user).access_token
    resp = requests.post(f"{live_server.url}/api/equity/orders", json=crypto_limit(client_order_id="live-1"),
                         headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": SPOOFED,
                                  "X-Request-ID": "from-the-client"}, timeout=10)
    assert resp.status_code == 201, resp.text
    events = list(BrokerOrderEvent.objects.filter(client_order_id="live-1"))
    assert {e.client_ip for e in events} == {"127.0.0.1"}
    assert {e.client_request_id for e in events} == {"from-the-client"}
    assert "from-the-client" not in {e.request_id for e in events}
