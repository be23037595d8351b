"""Re-encrypt every stored secret under the newest key of EQUITY_ORDERS["CREDENTIALS_KEYS"].

Rotation: put the new key first (the demo site: `BROKER_CREDENTIALS_KEYS=new,old`), restart, run this command,
then drop the old key. Rows already under the newest key are left alone, so running it again
changes nothing. It prints counts and row ids only, never a secret.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import models, transaction
from django.db.models.functions import Cast

from brokers.fields import CredentialsUndecryptable, rotate_token
from brokers.models import BrokerAccount, KisAccessToken


class Command(BaseCommand):
    help = "Re-encrypt broker credentials and KIS access tokens under the newest EQUITY_ORDERS['CREDENTIALS_KEYS'] key."

    def handle(self, *args, **options):
        lost = self._rotate("broker credentials", BrokerAccount, "credentials")
        self._rotate("KIS access tokens", KisAccessToken, "token")  # a cache: an unreadable one is re-issued
        if lost:
            raise CommandError(f"No key decrypts the credentials of broker connections {lost}: keep the key "
                               'that wrote them in EQUITY_ORDERS["CREDENTIALS_KEYS"], '
                               "or have their owners reconnect.")

    def _rotate(self, name: str, model: type[models.Model], field: str) -> list[int]:
        """Rotate one encrypted column row by row; returns the ids no key decrypts."""
        rotated, current, lost = 0, 0, []
        for pk in model.objects.order_by("pk").values_list("pk", flat=True):
            with transaction.atomic():
                # The stored ciphertext as text: the field's own decryption stays out of the way.
                token = (model.objects.select_for_update().filter(pk=pk)
                         .annotate(ciphertext=Cast(field, models.TextField()))
                         .values_list("ciphertext", flat=True).first())
                if not token:  # deleted meanwhile
                    continue
                try:
                    fresh = rotate_token(token)
                except CredentialsUndecryptable:
                    lost.append(pk)
                    continue
                if fresh is None:
                    current += 1
                    continue
                model.objects.filter(pk=pk).update(**{field: models.Value(fresh, output_field=models.TextField())})
                rotated += 1
        self.stdout.write(f"{name}: {rotated} re-encrypted, {current} already under the newest key, "
                          f"{len(lost)} undecryptable{' ' + str(lost) if lost else ''}")
        return lost
