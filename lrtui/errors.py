"""Errors reported to the user, and the exit statuses of the ``lrtui`` command.

Kept apart from :mod:`lrtui.cli` so that every subcommand raises the one ``UserError`` the
command catches, however the command was started (``lrtui``, ``python -m lrtui``,
``python -m lrtui.cli``).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: reported as one line on stderr with exit status 2."""


#: Exit statuses, documented in the README.
EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
#: ``lrtui apply``: the run did not confirm the command in time (it stays queued).
EXIT_NOT_CONFIRMED = 4
EXIT_INTERRUPTED = 130
