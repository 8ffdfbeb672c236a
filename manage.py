#!/usr/bin/env python
"""Django's command-line utility."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    if len(sys.argv) > 1 and sys.argv[1] == "runserver":
        from config.startup import enforce_startup_config

        enforce_startup_config("web")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
