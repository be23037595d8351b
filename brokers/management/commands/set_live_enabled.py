from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from brokers.services import set_live_enabled


class Command(BaseCommand):
    help = ("Enable or disable live trading for a user (operators only; never the user through the API). "
            "The user is named by their login (the user model's USERNAME_FIELD: a username, or an e-mail).")

    def add_arguments(self, parser):
        parser.add_argument("login", help="The user's USERNAME_FIELD value.")
        parser.add_argument("state", choices=["on", "off"])

    def handle(self, login, state, **options):
        User = get_user_model()
        user = User.objects.filter(**{User.USERNAME_FIELD: login}).first()
        if user is None:
            raise CommandError(f"No user {login!r}.")
        set_live_enabled(user=user, enabled=state == "on")
        self.stdout.write(f"live trading {state} for {login}")
