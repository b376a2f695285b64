"""Errors a user's input causes: one line naming what is wrong, exit code 2, no traceback."""


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit code 2."""
