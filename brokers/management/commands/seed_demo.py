"""A demo user on the simulator: connections for all three asset classes and a few quotes."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from brokers.models import BrokerAccount
from brokers.services import connect_broker

DEMO_USERNAME, DEMO_PASSWORD, ADMIN_USERNAME = "demo", "demo-pass-1234", "admin"
DEMO_QUOTES = [("us_equity", "AAPL", "188.20"), ("us_equity", "MSFT", "415.50"),
               ("kr_equity", "005930", "70000"), ("crypto", "BTC/USD", "50000"), ("crypto", "ETH/USD", "3000")]


class Command(BaseCommand):
    help = ("Create (or refresh) the demo user, its simulator connections and demo quotes, and the operator "
            "admin. Idempotent. With --username/--password it makes another trader the same way "
            "(the operator keeps --admin-password).")

    def add_arguments(self, parser):
        parser.add_argument("--username", default=DEMO_USERNAME)
        parser.add_argument("--password", default=DEMO_PASSWORD)
        parser.add_argument("--admin-password", default=DEMO_PASSWORD)

    def handle(self, username, password, admin_password, **options):
        from brokers.sim_exchange import set_quote

        for asset_class, symbol, price in DEMO_QUOTES:
            set_quote(asset_class, symbol, price)
        User = get_user_model()
        user, created = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.com"})
        user.set_password(password)
        user.save()
        for asset_class in ("us_equity", "kr_equity", "crypto"):
            if not BrokerAccount.objects.filter(user=user, asset_class=asset_class, environment="paper").exists():
                connect_broker(user=user, asset_class=asset_class, exchange="sim", environment="paper",
                               label=f"demo {asset_class}", credentials={})
        admin, _ = User.objects.get_or_create(username=ADMIN_USERNAME,
                                              defaults={"email": "admin@example.com", "is_staff": True,
                                                        "is_superuser": True})
        admin.is_staff = admin.is_superuser = True
        admin.set_password(admin_password)
        admin.save()
        self.stdout.write(f"demo user: {username} / {password} (simulator connections for us_equity, kr_equity, "
                          f"crypto); admin: {ADMIN_USERNAME} / {admin_password}; quotes: "
                          + ", ".join(f"{s} {p}" for _, s, p in DEMO_QUOTES))
