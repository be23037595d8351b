import csv
import json

from datetime import UTC, datetime, time

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from audit.chain import canonical_content, content_fields
from audit.models import BrokerOrderEvent


class Command(BaseCommand):
    help = ("Write audit rows with their hashes, in each user's chain order (user, then id), as JSON lines or "
            "CSV. Each row's fields are its canonical content (audit.chain): an auditor recomputes "
            "hash = sha256(prev_hash + canonical JSON of every field but id, prev_hash and hash) and checks that "
            "each prev_hash is the previous row's hash of the same user_id.")

    def add_arguments(self, parser):
        parser.add_argument("--since", help="A date (YYYY-MM-DD, UTC) or an ISO-8601 time; default: every row.")
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
        parser.add_argument("--output", help="A file to write; default: standard output.")

    def handle(self, *args, **options):
        rows = BrokerOrderEvent.objects.order_by("user_id", "id")
        if options["since"]:
            rows = rows.filter(created_at__gte=_since(options["since"]))
        columns = ["id", *[f.attname for f in content_fields()], "prev_hash", "hash"]
        out = open(options["output"], "w", newline="", encoding="utf-8") if options["output"] else self.stdout
        try:
            writer = csv.DictWriter(out, fieldnames=columns) if options["format"] == "csv" else None
            if writer:
                writer.writeheader()
            count = 0
            for event in rows.iterator(chunk_size=2000):
                record = {"id": event.id, **canonical_content(event), "prev_hash": event.prev_hash,
                          "hash": event.hash}
                if writer:
                    writer.writerow({k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else
                                     ("" if v is None else v) for k, v in record.items()})
                else:
                    out.write(json.dumps(record, sort_keys=True, ensure_ascii=True) + "\n")
                count += 1
        finally:
            if out is not self.stdout:
                out.close()
        if options["output"]:
            self.stderr.write(f"{count} rows written to {options['output']}")


def _since(text: str) -> datetime:
    moment = parse_datetime(text)
    if moment is not None:
        return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)
    day = parse_date(text)
    if day is None:
        raise CommandError("--since takes a date (YYYY-MM-DD) or an ISO-8601 time.")
    return datetime.combine(day, time(0), tzinfo=UTC)
