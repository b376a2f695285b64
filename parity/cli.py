"""The `parity` command line (also `python -m parity`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from parity import __version__


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit code 2."""


def _cmd_cases(args: argparse.Namespace) -> int:
    from parity.cases import format_case_table

    print(format_case_table())
    return 0


def _cmd_make_fixture(args: argparse.Namespace) -> int:
    from parity.fixture import make_fixture

    out = make_fixture(Path(args.out))
    print(f"wrote {out} ({out.stat().st_size} bytes) and {out.parent / 'README.md'}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from parity.cases import format_case_table
    from parity.data import load_scan
    from parity.fixture import FIXTURE_PATH

    path = Path(args.data) if args.data else FIXTURE_PATH
    scan = load_scan(path)
    amp2 = scan.diffraction ** 2
    print(f"data: {scan.path}")
    print(f"  {scan.n_points} patterns of {scan.N}x{scan.N}; mean counts/pixel {amp2.mean():.2f}; "
          f"x in [{scan.xcoords.min():.2f}, {scan.xcoords.max():.2f}] px, "
          f"y in [{scan.ycoords.min():.2f}, {scan.ycoords.max():.2f}] px")
    print()
    print(format_case_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parity", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ptycho-parity {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("cases", help="list the named parity cases")
    p.set_defaults(func=_cmd_cases)

    p = sub.add_parser("make-fixture", help="(re)generate the shipped fly001-format fixture")
    from parity.fixture import FIXTURE_PATH

    p.add_argument("--out", default=str(FIXTURE_PATH), help="output NPZ (default: %(default)s)")
    p.set_defaults(func=_cmd_make_fixture)

    p = sub.add_parser("check", help="run the parity job and print the report")
    p.add_argument("--data", help="any fly001-format NPZ (default: the shipped fixture)")
    p.set_defaults(func=_cmd_check)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from parity.config import ConfigError
    from parity.data import DataError
    from parity.weights import WeightError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, DataError, ConfigError, WeightError) as exc:
        print(f"parity: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("parity: interrupted", file=sys.stderr)
        return 130
