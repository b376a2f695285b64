"""Errors a user's input causes: one line naming what is wrong, exit code 2, no traceback — bad
input (`UsageError`) or an adapter wired wrongly (`WiringError`)."""


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit code 2."""


class WiringError(Exception):
    """An adapter is wired wrongly (a tap that never fired, a derived stage without its inputs):
    the port may be right, the adapter is not. Exit code 2."""
