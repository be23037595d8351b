#!/usr/bin/env python
"""The host product's manage.py: a Django project that is not the demo site and installs the apps from a wheel."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
