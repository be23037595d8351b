"""The two feature flags of SPEC.md: paper on for everyone, live off."""

from django.db import migrations

FLAGS = {"FEATURE_EQUITY_PAPER": True, "FEATURE_EQUITY_LIVE": False}


def create_flags(apps, schema_editor):
    Flag = apps.get_model("waffle", "Flag")
    for name, everyone in FLAGS.items():
        Flag.objects.get_or_create(name=name, defaults={"everyone": everyone,
                                                        "note": "Gates POST /api/equity/orders (SPEC.md)."})


def remove_flags(apps, schema_editor):
    apps.get_model("waffle", "Flag").objects.filter(name__in=FLAGS).delete()


class Migration(migrations.Migration):
    dependencies = [("equity", "0001_initial"), ("waffle", "0004_update_everyone_nullbooleanfield")]
    operations = [migrations.RunPython(create_flags, remove_flags)]
