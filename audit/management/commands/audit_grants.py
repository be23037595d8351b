"""The grants of a least-privilege service role on PostgreSQL (README "Least-privilege deployment").

Migrations run as the owner of the tables; the service connects as another role that this
command grants what the apps need: SELECT, INSERT, UPDATE, DELETE on the apps' tables, USAGE on
their sequences, SELECT on django_migrations, and on the audit table `broker_order_events` only
SELECT and INSERT. Not being the owner, the service cannot `ALTER TABLE … DISABLE TRIGGER` or drop
the append-only trigger (audit migration 0002); lacking the privileges, it cannot UPDATE, DELETE or
TRUNCATE the audit rows in the first place.

    manage.py audit_grants equity_service            # print the SQL, to run as the owner
    manage.py audit_grants equity_service --apply    # run it here, on this connection (the owner's)

Run it again after every `migrate`: a table added later has no grant until then (refused, not open).
"""

from __future__ import annotations

import re

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from audit.models import BrokerOrderEvent

# A plain, unquoted PostgreSQL identifier: nothing a shell or SQL could read as more than a name.
_ROLE_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def grant_statements(connection, role: str) -> list[str]:
    """The SQL that gives `role` exactly what the service needs, in order; safe to run again."""
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database(), current_schema()")
        database, schema = cursor.fetchone()
    audit_table = BrokerOrderEvent._meta.db_table
    tables = sorted(set(connection.introspection.django_table_names(only_existing=True, include_views=False)))
    role_q, schema_q = quote(role), quote(schema)
    statements = [
        f"GRANT CONNECT ON DATABASE {quote(database)} TO {role_q}",
        f"GRANT USAGE ON SCHEMA {schema_q} TO {role_q}",
    ]
    for table in tables:
        table_q = f"{schema_q}.{quote(table)}"
        # REVOKE first, so that a second run also takes back anything granted by hand in between.
        statements.append(f"REVOKE ALL ON {table_q} FROM {role_q}")
        if table == audit_table:
            statements.append(f"REVOKE ALL ON {table_q} FROM PUBLIC")
            statements.append(f"GRANT SELECT, INSERT ON {table_q} TO {role_q}")
        else:
            statements.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table_q} TO {role_q}")
    statements += [
        f"REVOKE ALL ON {schema_q}.{quote('django_migrations')} FROM {role_q}",
        f"GRANT SELECT ON {schema_q}.{quote('django_migrations')} TO {role_q}",
        # nextval() for the id columns; UPDATE on a sequence (setval) is not granted.
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema_q} TO {role_q}",
    ]
    return statements


def refusal(connection, role: str) -> str | None:
    """Why `role` must not be the service role here, or None: missing, a superuser, or able to act
    as the audit table's owner (its owner or a member of the owner's role)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [role])
        row = cursor.fetchone()
        if row is None:
            return f"role {role} does not exist (CREATE ROLE {role} LOGIN PASSWORD '…' first)"
        if row[0]:
            return f"role {role} is a superuser: it could disable or drop any trigger"
        cursor.execute("SELECT tableowner FROM pg_tables WHERE tablename = %s AND schemaname = current_schema()",
                       [BrokerOrderEvent._meta.db_table])
        owner = cursor.fetchone()
        if owner is None:
            return "broker_order_events does not exist here: run migrate first"
        cursor.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", [role, owner[0]])
        if cursor.fetchone()[0]:
            return (f"role {role} is the audit table's owner {owner[0]} or a member of it: "
                    "it could ALTER TABLE … DISABLE TRIGGER")
    return None


class Command(BaseCommand):
    help = ("Print (or with --apply run, as the owner) the grants of a least-privilege service role: "
            "SELECT/INSERT only on the audit table, no ownership.")

    def add_arguments(self, parser):
        parser.add_argument("role", help="The role the service connects as (not the owner, not a superuser).")
        parser.add_argument("--apply", action="store_true", help="Run the statements instead of printing them.")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *, role, apply, database, **options):
        if not _ROLE_RE.fullmatch(role):
            raise CommandError("role: use 1 to 63 lower-case letters, digits or _, starting with a letter or _.")
        connection = connections[database]
        if connection.vendor != "postgresql":
            raise CommandError(f"audit_grants is for PostgreSQL; this database is {connection.vendor}.")
        statements = grant_statements(connection, role)
        if not apply:
            self.stdout.write("-- Run as the owner of the tables (the role that runs migrate), after every migrate.")
            self.stdout.write("BEGIN;")
            for sql in statements:
                self.stdout.write(f"{sql};")
            self.stdout.write("COMMIT;")
            return
        problem = refusal(connection, role)
        if problem:
            raise CommandError(problem)
        with transaction.atomic(using=database), connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
        self.stdout.write(f"Granted {role} the service's privileges ({len(statements)} statements); "
                          "on broker_order_events only SELECT and INSERT.")
