from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from audit.services import RequestMeta
from brokers.errors import DomainError
from brokers.types import AssetClass
from equity import controls


class Command(BaseCommand):
    help = ("Set or release a kill switch as an operator: `kill_switch <login> on|off` for one user, "
            "`kill_switch --all on|off` for every user (the global switch). The login is the user model's "
            "USERNAME_FIELD. An operator may release a switch before its `until`. Every change is audited.")

    def add_arguments(self, parser):
        parser.add_argument("args", nargs="+", metavar="[login] on|off")
        parser.add_argument("--all", action="store_true", help="The global switch, for every user.")
        parser.add_argument("--mode", choices=["halted", "reducing"], default="halted")
        parser.add_argument("--reason", default="")
        parser.add_argument("--asset-class", choices=[a.value for a in AssetClass], default="",
                            help="Only this asset class (default: every asset class).")
        parser.add_argument("--until", default=None, help="ISO-8601 time at which the switch lapses.")
        parser.add_argument("--cancel-open", action="store_true", help="Also cancel the open orders it covers.")
        parser.add_argument("--operator", default="manage.py kill_switch", help="Who is acting, for the audit log.")

    def handle(self, *args, **options):
        if options["all"]:
            if len(args) != 1:
                raise CommandError("With --all give only on or off.")
            login, state, user = None, args[0], None
        else:
            if len(args) != 2:
                raise CommandError("Give a login and on or off (or --all on|off).")
            login, state = args
            User = get_user_model()
            user = User.objects.filter(**{User.USERNAME_FIELD: login}).first()
            if user is None:
                raise CommandError(f"No user {login!r}.")
        if state not in ("on", "off"):
            raise CommandError("The state is on or off.")
        until = None
        if options["until"]:
            until = parse_datetime(options["until"])
            if until is None or until.tzinfo is None:
                raise CommandError("--until must be an ISO-8601 time with a zone, e.g. 2026-12-04T14:30:00Z.")
        who = "every user" if user is None else login
        scope = options["asset_class"] or "all asset classes"
        operator = f"operator {options['operator']}"
        try:
            if state == "on":
                done = controls.set_kill_switch(user=user, mode=options["mode"], asset_class=options["asset_class"],
                                                reason=options["reason"], until=until, set_by=operator,
                                                by_operator=True, cancel_open=options["cancel_open"],
                                                meta=RequestMeta())
                self.stdout.write(f"kill switch {options['mode']} for {who}, {scope}")
                if done.canceled is not None:
                    self.stdout.write(f"canceled {len(done.canceled.canceled)} open orders, "
                                      f"{len(done.canceled.failed)} failed")
                    for failure in done.canceled.failed:
                        self.stdout.write(f"  {failure['order_id']}: {failure['code']} {failure['detail']}")
            else:
                released = controls.release_kill_switch(user=user, asset_class=options["asset_class"],
                                                        released_by=operator, by_operator=True, meta=RequestMeta())
                self.stdout.write(f"kill switch released for {who}, {scope}" if released
                                  else f"no kill switch for {who}, {scope}")
        except DomainError as err:
            raise CommandError(err.detail) from err
