from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from brokers.services import set_live_enabled


class Command(BaseCommand):
    help = "Enable or disable live trading for a user (operators only; never the user through the API)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("state", choices=["on", "off"])

    def handle(self, username, state, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        set_live_enabled(user=user, enabled=state == "on")
        self.stdout.write(f"live trading {state} for {username}")
