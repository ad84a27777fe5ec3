#!/usr/bin/env python
"""Django's command-line utility for opsdesk."""
import os
import sys
from importlib import import_module


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ops_project.settings")
    from django.core.exceptions import ImproperlyConfigured

    try:
        # Loaded here first: a bad setting is one line naming it (ops_project/environment.py), not
        # a traceback through Django's command machinery.
        import_module(os.environ["DJANGO_SETTINGS_MODULE"])
    except ImproperlyConfigured as error:
        sys.stderr.write(f"opsdesk: {error}\n")
        sys.exit(1)
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # `manage.py list_backups | head`: the reader has gone, which is no error of ours. Point
        # stdout at /dev/null so the interpreter's final flush does not complain (Python's docs,
        # "Note on SIGPIPE"), and exit as a killed-by-SIGPIPE process would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)


if __name__ == "__main__":
    main()
