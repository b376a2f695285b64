"""Errors a user's input causes: one line naming what is wrong, exit code 2, no traceback."""

from __future__ import annotations

import argparse


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit code 2."""


def unique_cases(args: argparse.Namespace) -> list:
    """The chosen cases, each once (a repeated --case runs once)."""
    from parity.inputs.cases import cases_in, get_case

    try:
        return [get_case(n) for n in dict.fromkeys(args.case)] if args.case else cases_in(args.cases)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
