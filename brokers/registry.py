"""BotRegistry: the only switchboard from (user, asset_class, environment) to an adapter.

It builds a fresh adapter from the user's own BrokerAccount on every call: no process-wide
client holds anyone's keys. Adding a broker = one adapter module + one line in ADAPTERS.
"""

from __future__ import annotations

from django.urls import NoReverseMatch, reverse
from django.utils.module_loading import import_string

from brokers.base import BrokerAdapter
from brokers.models import BrokerAccount
from brokers.types import AssetClass, Environment, Exchange
from brokers.errors import BrokerNotConfigured

ADAPTERS: dict[str, str] = {
    Exchange.SIM: "brokers.adapters.sim.SimAdapter",
    Exchange.ALPACA: "brokers.adapters.alpaca.AlpacaAdapter",
    Exchange.KIS: "brokers.adapters.kis.KisAdapter",
    Exchange.UPBIT: "brokers.adapters.upbit.UpbitAdapter",
}


def adapter_class(exchange: str):
    return import_string(ADAPTERS[exchange])


def supported(exchange: str, asset_class: str, environment: str) -> bool:
    if exchange not in ADAPTERS:
        return False
    return (AssetClass(asset_class), Environment(environment)) in adapter_class(exchange).SUPPORTED


def _connections_path() -> str:
    """Where the connections route is mounted: the host chooses the prefix (the demo: /api/brokers/accounts)."""
    try:
        return reverse("broker-accounts-list")
    except NoReverseMatch:  # a host that did not include brokers.urls
        return "the broker connections route"


def build_adapter(connection: BrokerAccount) -> BrokerAdapter:
    cls = adapter_class(connection.exchange)
    return cls(credentials=connection.credentials, asset_class=AssetClass(connection.asset_class),
               live=connection.is_live, connection_id=connection.pk)


class BotRegistry:
    @staticmethod
    def connection_for_user(user_id: int, asset_class: str, *, live: bool = False) -> BrokerAccount:
        environment = Environment.LIVE if live else Environment.PAPER
        connection = BrokerAccount.objects.filter(user_id=user_id, asset_class=asset_class,
                                                  environment=environment).first()
        if connection is None:
            raise BotRegistry.not_configured(asset_class, live=live)
        return connection

    @staticmethod
    def not_configured(asset_class: str, *, live: bool = False) -> BrokerNotConfigured:
        """The refusal when the user has no connection for this asset class and environment (gate 3).

        Also raised by a caller that read the connection row itself (a placement reads it joined to
        the rows gate 4 judges: equity.gates.read_for_placement), so the answer is the same.
        """
        environment = Environment.LIVE if live else Environment.PAPER
        return BrokerNotConfigured(f"No {environment} broker connection for {asset_class}; "
                                   f"add one with POST {_connections_path()}.")

    @classmethod
    def get_broker_for_user(cls, user_id: int, asset_class: str, *, live: bool = False) -> BrokerAdapter:
        return build_adapter(cls.connection_for_user(user_id, asset_class, live=live))
