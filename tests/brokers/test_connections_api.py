"""/api/brokers/accounts: list, connect, delete; never a secret out."""

from __future__ import annotations

import pytest
from django.db import connection as db

from brokers.models import BrokerAccount
from tests.equity.helpers import assert_error

pytestmark = pytest.mark.django_db
FIELDS = {"id", "asset_class", "exchange", "environment", "label", "status", "created_at"}


def connect(client, **body):
    payload = {"asset_class": "crypto", "exchange": "sim", "environment": "paper", "credentials": {}}
    payload.update(body)
    return client.post("/api/brokers/accounts", payload, format="json")


def test_connect_sim_returns_201_with_the_item_shape(api_client):
    resp = connect(api_client, label="paper btc")
    assert resp.status_code == 201, resp.content
    assert FIELDS <= set(resp.json()) and resp.json()["status"] == "active" and resp.json()["label"] == "paper btc"


def test_list_shows_only_my_connections_and_no_credentials(api_client, make_client, other_user):
    connect(api_client)
    connect(make_client(other_user), asset_class="us_equity")
    items = api_client.get("/api/brokers/accounts").json()["items"]
    assert [i["asset_class"] for i in items] == ["crypto"]
    assert all("credentials" not in i for i in items)


def test_a_second_connection_for_the_same_asset_class_and_environment_is_400(api_client):
    connect(api_client)
    assert_error(connect(api_client), 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("exchange,asset_class,environment", [
    ("sim", "crypto", "live"), ("upbit", "crypto", "paper"), ("kis", "crypto", "paper"),
    ("alpaca", "kr_equity", "paper"), ("kis", "us_equity", "live"),
])
def test_combinations_that_do_not_exist_are_400(api_client, exchange, asset_class, environment):
    resp = connect(api_client, exchange=exchange, asset_class=asset_class, environment=environment)
    assert_error(resp, 400, "VALIDATION_ERROR")


def test_missing_credentials_are_400_on_credentials(api_client):
    resp = connect(api_client, exchange="alpaca", asset_class="us_equity", credentials={"api_key": "PKXXXX"})
    assert "credentials" in assert_error(resp, 400, "VALIDATION_ERROR")["errors"]


def test_kis_account_number_must_look_like_8_digits_dash_2(api_client):
    resp = connect(api_client, exchange="kis", asset_class="kr_equity",
                   credentials={"app_key": "a", "app_secret": "b", "account_no": "1234"})
    assert "credentials" in assert_error(resp, 400, "VALIDATION_ERROR")["errors"]


def test_delete_my_connection_is_204_and_another_users_is_404(api_client, make_client, other_user):
    made = connect(api_client).json()
    assert_error(make_client(other_user).delete(f"/api/brokers/accounts/{made['id']}"), 404, "NOT_FOUND")
    assert api_client.delete(f"/api/brokers/accounts/{made['id']}").status_code == 204
    assert not BrokerAccount.objects.exists()


def test_credentials_are_encrypted_at_rest(user):
    BrokerAccount.objects.create(user=user, asset_class="us_equity", exchange="alpaca", environment="paper",
                                 credentials={"api_key": "PKSECRETKEYID", "secret_key": "very-secret-value"})
    with db.cursor() as cur:
        cur.execute("SELECT credentials FROM brokers_brokeraccount")
        raw = cur.fetchone()[0]
    assert "very-secret-value" not in raw and "PKSECRETKEYID" not in raw
    assert BrokerAccount.objects.get().credentials["secret_key"] == "very-secret-value"


def test_credentials_written_under_an_old_key_still_decrypt_after_rotation(user, settings, equity_orders):
    from cryptography.fernet import Fernet

    old = Fernet.generate_key().decode()
    equity_orders.CREDENTIALS_KEYS = [old]
    BrokerAccount.objects.create(user=user, asset_class="crypto", exchange="sim", environment="paper",
                                 credentials={"starting_cash": "5"})
    equity_orders.CREDENTIALS_KEYS = [Fernet.generate_key().decode(), old]
    assert BrokerAccount.objects.get().credentials == {"starting_cash": "5"}


def test_credentials_under_a_removed_key_raise_instead_of_returning_ciphertext(user, settings, equity_orders):
    from cryptography.fernet import Fernet

    from brokers.fields import CredentialsUndecryptable

    equity_orders.CREDENTIALS_KEYS = [Fernet.generate_key().decode()]
    BrokerAccount.objects.create(user=user, asset_class="crypto", exchange="sim", environment="paper",
                                 credentials={"x": "y"})
    equity_orders.CREDENTIALS_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CredentialsUndecryptable):
        BrokerAccount.objects.get()
