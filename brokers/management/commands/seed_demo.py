"""A demo user on the simulator: connections for all three asset classes and a few quotes."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from brokers.models import BrokerAccount
from brokers.services import connect_broker

DEMO_PASSWORD = "demo-pass-1234"  # development only: the root page shows it when DEBUG=1
DEMO_QUOTES = [("us_equity", "AAPL", "188.20"), ("us_equity", "MSFT", "415.50"),
               ("kr_equity", "005930", "70000"), ("crypto", "BTC/USD", "50000"), ("crypto", "ETH/USD", "3000")]


def _is_email_login(User) -> bool:
    return User.USERNAME_FIELD == User.get_email_field_name()


def _login(User, name: str) -> str:
    return f"{name}@example.com" if _is_email_login(User) else name


def _email_default(User, login: str) -> dict:
    """An e-mail for a user model that has one beside the login."""
    email_field = User.get_email_field_name()
    if _is_email_login(User) or email_field not in {f.name for f in User._meta.get_fields()}:
        return {}
    return {email_field: f"{login}@example.com"}


def demo_logins(User) -> tuple[str, str]:
    """The logins seed_demo gives the demo trader and the operator, for this user model."""
    return _login(User, "demo"), _login(User, "admin")


class Command(BaseCommand):
    help = ("Create (or refresh) the demo user, its simulator connections and demo quotes, and the operator "
            "admin. Idempotent. With --username/--password it makes another trader the same way "
            "(the operator keeps --admin-password).")

    def add_arguments(self, parser):
        parser.add_argument("--username", "--login", dest="login", default=None,
                            help="The demo user's login (USERNAME_FIELD); default demo, or demo@example.com "
                                 "when the login is an e-mail.")
        parser.add_argument("--password", default=DEMO_PASSWORD)
        parser.add_argument("--admin-password", default=DEMO_PASSWORD,
                            help="The operator's password (not --password: a second trader leaves it alone).")

    def handle(self, login, password, admin_password, **options):
        from brokers.sim_exchange import set_quote

        for asset_class, symbol, price in DEMO_QUOTES:
            set_quote(asset_class, symbol, price)
        User = get_user_model()
        username = login or _login(User, "demo")
        user, created = User.objects.get_or_create(**{User.USERNAME_FIELD: username},
                                                   defaults=_email_default(User, username))
        user.set_password(password)
        user.save()
        for asset_class in ("us_equity", "kr_equity", "crypto"):
            if not BrokerAccount.objects.filter(user=user, asset_class=asset_class, environment="paper").exists():
                connect_broker(user=user, asset_class=asset_class, exchange="sim", environment="paper",
                               label=f"demo {asset_class}", credentials={})
        admin_login = _login(User, "admin")
        admin, _ = User.objects.get_or_create(**{User.USERNAME_FIELD: admin_login},
                                              defaults={**_email_default(User, admin_login),
                                                        "is_staff": True, "is_superuser": True})
        admin.is_staff = admin.is_superuser = True
        admin.set_password(admin_password)
        admin.save()
        self.stdout.write(f"demo user: {username} / {password} (simulator connections for us_equity, kr_equity, "
                          f"crypto); admin: {admin_login} / {admin_password}; quotes: "
                          + ", ".join(f"{s} {p}" for _, s, p in DEMO_QUOTES))
