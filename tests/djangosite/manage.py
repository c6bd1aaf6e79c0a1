#!/usr/bin/env python
"""A second Django project for replpool's Django tests (see site_config/settings.py):
contrib apps with auth on a database of its own, an archive database, a live server."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_config.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
