# Written by hand on 2026-12-03 (issue 13, item 1).
"""broker_order_events: append-only by a plain SQL trigger that no session setting switches off.

django-pgtrigger's triggers (migration 0001) start with `_pgtrigger_should_ignore()`, which honours
the session setting `pgtrigger.ignore`: any connection could `SET LOCAL pgtrigger.ignore = '{…}'`
and then UPDATE or DELETE audit rows. The trigger below reads no setting. It is `ENABLE ALWAYS`, so
`session_replication_role = replica` does not skip it either. What is left is the table owner's
`ALTER TABLE … DISABLE TRIGGER` (or DROP TRIGGER): the service must therefore not connect as the
owner (README "Least-privilege deployment", `manage.py audit_grants`).

One statement-level trigger for UPDATE, DELETE and TRUNCATE: it fires even for a statement that
matches no row, and TRUNCATE (which bypasses row triggers) is covered by the same function.

The plain trigger is created before the old ones are dropped, so the table is never unprotected.
SQLite keeps what it had: no database trigger (the code refuses updates and deletes).
"""

from django.db import migrations

import pgtrigger.migrations

POSTGRES_INSTALL = """
CREATE FUNCTION broker_order_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'broker_order_events is append-only: % refused', TG_OP;
END
$$;
CREATE TRIGGER broker_order_events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON broker_order_events
    FOR EACH STATEMENT EXECUTE FUNCTION broker_order_events_append_only();
ALTER TABLE broker_order_events ENABLE ALWAYS TRIGGER broker_order_events_append_only;
"""
POSTGRES_UNINSTALL = """
DROP TRIGGER IF EXISTS broker_order_events_append_only ON broker_order_events;
DROP FUNCTION IF EXISTS broker_order_events_append_only();
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_INSTALL, params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_UNINSTALL, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0001_initial'),
    ]

    operations = [
        migrations.RunPython(install, uninstall),
        pgtrigger.migrations.RemoveTrigger(
            model_name='brokerorderevent',
            name='append_only_no_update',
        ),
        pgtrigger.migrations.RemoveTrigger(
            model_name='brokerorderevent',
            name='append_only_no_delete',
        ),
        pgtrigger.migrations.RemoveTrigger(
            model_name='brokerorderevent',
            name='append_only_no_truncate',
        ),
    ]
