from django.core.management.base import BaseCommand, CommandError

from brokers.sim_exchange import get_quote, set_quote
from brokers.types import AssetClass
from brokers.errors import DomainError


class Command(BaseCommand):
    help = ("Set the simulator's price of a symbol and match the resting simulator orders against it "
            "before returning. Example: manage.py sim_quote crypto BTC/USD 50000")
    requires_system_checks = []  # an operator's price move must not wait on (or fail with) the URL checks

    def add_arguments(self, parser):
        parser.add_argument("asset_class", choices=[a.value for a in AssetClass])
        parser.add_argument("symbol", help="the order symbol, e.g. AAPL, 005930, BTC/USD")
        parser.add_argument("price", help="a positive number, e.g. 188.20")

    def handle(self, asset_class, symbol, price, **options):
        before = get_quote(asset_class, symbol)
        try:
            changed = set_quote(asset_class, symbol, price)
        except (ValueError, DomainError) as exc:
            raise CommandError(str(exc)) from exc
        now = get_quote(asset_class, symbol)
        was = f"was {before.normalize():f}" if before is not None else "new symbol"
        noun = "order" if changed == 1 else "orders"
        self.stdout.write(f"{asset_class} {symbol} quoted at {now.normalize():f} ({was}); "
                          f"{changed} resting simulator {noun} changed")
