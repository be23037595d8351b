from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from brokers.services import log_out_everywhere


class Command(BaseCommand):
    help = ("End every access and refresh token of a user (a lost phone, a leaked token): each earlier token is "
            "refused with 401 on its next use; the user logs in again.")

    def add_arguments(self, parser):
        parser.add_argument("login", help="the user's login (the user model's USERNAME_FIELD)")

    def handle(self, login, **options):
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get_by_natural_key(login)
        except user_model.DoesNotExist:
            raise CommandError(f"No user {login!r}.") from None
        generation = log_out_everywhere(user=user)
        self.stdout.write(f"every earlier token of {login} is ended (token generation {generation})")
