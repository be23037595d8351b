"""audit.selectors.owned_order_exists_sql is owned_order_events(...).exists() as one EXISTS: the same
answer for every kind of audit row and every caller, and the model's own table and columns."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from audit.models import BrokerOrderEvent
from audit.selectors import owned_order_events, owned_order_exists_sql
from tests.equity.helpers import crypto_limit, crypto_market, place
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _sql_says(user_id, ref) -> bool:
    anchor = get_user_model().objects.order_by("pk")[:1]
    return anchor.annotate(owned=owned_order_exists_sql(user_id=user_id, order_ref=ref)).values_list(
        "owned", flat=True).get()


def test_it_answers_as_the_queryset_for_every_ref_and_caller(api_client, user, sim_crypto, make_client):
    other = UserFactory()
    from tests.factories import BrokerAccountFactory
    BrokerAccountFactory(user=other, asset_class="crypto")
    placed = place(api_client, crypto_limit(client_order_id="placed-1")).json()
    refused = place(api_client, crypto_market(qty=1000, client_order_id="refused-1"))  # funds: a rejected row
    assert refused.status_code == 422
    assert BrokerOrderEvent.objects.filter(client_order_id="refused-1", event_type="rejected", broker_order_id="")
    theirs = place(make_client(other), crypto_limit(client_order_id="theirs-1")).json()
    refs = ["placed-1", placed["broker_order_id"], "refused-1", "theirs-1", theirs["broker_order_id"], "", "nope",
            "placed-1' OR '1'='1"]
    answers = {}
    for caller in (user, other):
        for ref in refs:
            expected = owned_order_events(user_id=caller.pk, order_ref=ref).exists()
            assert _sql_says(caller.pk, ref) is expected, (caller, ref)
            answers[(caller.username, ref)] = expected
    assert answers[(user.username, "placed-1")] and not answers[(user.username, "refused-1")]
    assert not answers[(user.username, "theirs-1")] and answers[(other.username, "theirs-1")]


def test_it_reads_the_models_table_and_columns():
    sql = owned_order_exists_sql(user_id=1, order_ref="x").sql
    qn = connection.ops.quote_name
    meta = BrokerOrderEvent._meta
    assert qn(meta.db_table) in sql
    for name in ("user", "broker_order_id", "client_order_id", "event_type"):
        assert qn(meta.get_field(name).column) in sql
