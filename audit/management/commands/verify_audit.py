from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from audit.chain import chained_user_ids, verify_chain


class Command(BaseCommand):
    help = ("Recompute every user's audit hash chain (or one user's, --user <login>) and name the first row "
            "that does not verify. Exits non-zero when a chain is broken.")

    def add_arguments(self, parser):
        parser.add_argument("--user", help="The user's login (USERNAME_FIELD); default: every chain.")

    def handle(self, *args, **options):
        if options["user"]:
            User = get_user_model()
            user = User.objects.filter(**{User.USERNAME_FIELD: options["user"]}).first()
            if user is None:
                raise CommandError(f"No user {options['user']!r}.")
            user_ids = [user.pk]
        else:
            user_ids = chained_user_ids()
        broken = []
        for user_id in user_ids:
            report = verify_chain(user_id)
            if report.ok:
                self.stdout.write(f"{report.chain}: ok, {report.rows} rows")
            else:
                broken.append(report)
                self.stdout.write(f"{report.chain}: BROKEN at row {report.broken_event_id}: {report.reason}")
        if broken:
            raise CommandError(f"{len(broken)} chain(s) do not verify; first broken row: "
                               f"{broken[0].broken_event_id} ({broken[0].chain}).")
        self.stdout.write(f"{len(user_ids)} chain(s) verify.")
