"""The `parity` command line (also `python -m parity`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from parity import __version__
from parity.check import add_check_options
from parity.calibrate.propose import add_calibrate_options
from parity.recorded.make import add_record_options
from parity.errors import UsageError


def _cmd_check(args: argparse.Namespace) -> int:
    from parity.check import check

    return check(args)


def _cmd_cases(args: argparse.Namespace) -> int:
    from parity.inputs.casefile import chosen_cases
    from parity.inputs.cases import CASES, format_case_table

    print(format_case_table([*CASES, *(chosen_cases(None, None, args.case_file) if args.case_file else [])]))
    return 0


def _cmd_make_fixture(args: argparse.Namespace) -> int:
    from parity.inputs.fixture import FIXTURE_N128_PATH, FIXTURE_PATH, FixtureSpec, is_shipped, make_fixture, readme_path
    from parity.resources import INSTALLED

    probe = Path(args.probe) if args.probe else None
    default_out = {64: FIXTURE_PATH, 128: FIXTURE_N128_PATH}[args.N]
    out = Path(args.out or default_out)
    if INSTALLED and is_shipped(out):
        raise UsageError(f"the fixture of this installed copy lives in {out}; name a file of yours with --out FILE.npz")
    out = make_fixture(out, spec=FixtureSpec.for_N(args.N), probe_path=probe)
    print(f"wrote {out} ({out.stat().st_size} bytes) and {readme_path(out, probe)}")
    return 0


def _cmd_backends(args: argparse.Namespace) -> int:
    from parity.backends import broken, discover

    for name, backend in sorted(discover().items()):
        print(f"{name:12s} framework {backend.framework:12s} devices {', '.join(backend.devices)}")
    for name, why in sorted(broken().items()):
        print(f"{name:12s} cannot be used here: {why}")
    return 0


def _case_options(p: argparse.ArgumentParser, default: Optional[str], what: str = "which set of cases",
                  files: str = "") -> None:
    p.add_argument("--cases", choices=("default", "extended", "all"), default=None if files else default,
                   help=f"{what} (default: {default}{', or none with --case-file' * bool(files)}; see `parity cases`)")
    p.add_argument("--case", action="append", metavar="NAME", help="one case (repeatable; overrides --cases)")
    if files:
        p.add_argument("--case-file", action="append", metavar="FILE", default=[], help=files)


def _cmd_refresh(args: argparse.Namespace) -> int:
    from parity.goldens import store as goldens
    from parity.goldens.refresh import apply, format_plan, plan
    from parity.inputs.casefile import chosen_cases
    from parity.resources import INSTALLED

    if args.case_file and not args.goldens:  # the shipped goldens hold the built-in cases only
        raise UsageError("--case-file: name the folder for your cases' goldens with --goldens DIR")
    cases = chosen_cases(args.case, args.cases, args.case_file, default_set="all")
    directory = Path(args.goldens) if args.goldens else goldens.GOLDEN_DIR
    if not args.goldens and INSTALLED and not args.dry_run:
        raise UsageError(f"the goldens of this installed copy live in {goldens.GOLDEN_DIR}; "
                         f"name a folder of yours with --goldens DIR")
    if goldens.in_ci() and not args.allow_ci and not args.dry_run:
        raise UsageError("CI is set: goldens are never written in CI (use --dry-run, or --allow-ci)")
    print(f"parity refresh --{args.mode}: {len(cases)} case(s), goldens in {directory}/"
          f"{' (dry run)' if args.dry_run else ''}", flush=True)
    planned = plan(cases, args.mode, directory, progress=lambda line: print(line, flush=True),
                   recompute=args.recompute)
    if not args.dry_run:
        apply(planned, allow_ci=args.allow_ci)
    print(format_plan(planned, args.dry_run))
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    from parity.recorded.make import record_command

    return record_command(args)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from parity.calibrate.propose import calibrate_command

    return calibrate_command(args)


def _cmd_faults(args: argparse.Namespace) -> int:
    from parity.faults.evaluate import evaluate, format_table
    from parity.faults.catalogue import CATALOGUE, get_fault

    from parity.backends import get_backend

    try:
        faults = [get_fault(n) for n in args.fault] if args.fault else list(CATALOGUE)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    get_backend(args.ref).require()
    print(f"parity faults: {len(faults)} fault(s) injected into torch, reference {args.ref}", file=sys.stderr)
    rows = []
    for i, fault in enumerate(faults, 1):
        print(f"[{i}/{len(faults)}] {fault.name}: {fault.description} ({fault.case}) ...", file=sys.stderr, flush=True)
        rows.append((fault, evaluate(fault, ref=args.ref)))
    print(format_table(rows, markdown=args.markdown))
    missed = [f.name for f, obs in rows if not obs.matches(f) and not obs.not_applicable]
    skipped = [f.name for f, obs in rows if obs.not_applicable]
    if skipped:
        print(f"parity faults: not applicable with --ref {args.ref}: {', '.join(skipped)}", file=sys.stderr)
    if missed:
        print(f"parity faults: not caught or blamed as expected: {', '.join(missed)}", file=sys.stderr)
    return 1 if missed else 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import shlex

    from parity.bench import measure as bench, results as bench_results, tiers as bench_tiers
    from parity.inputs.casefile import chosen_cases
    from parity.inputs.cases import cases_in

    if args.console:
        bench.restart_under_the_workers_allocator()

    chosen = chosen_cases(args.case, args.cases, args.case_file)
    for case in chosen:  # a trained case's checkpoint read (and checked) before anything is timed
        case.state("float64")
    cases = [c.name for c in chosen]
    if args.repeat < 1:
        raise UsageError(f"--repeat must be >= 1, got {args.repeat}")
    old = None
    if args.compare:
        try:
            old = bench_results.load(Path(args.compare))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.shards < 0:
        raise UsageError(f"--shards must be >= 0, got {args.shards}")
    runs = ([] if args.no_pytest else [shlex.split(a) for a in args.pytest] if args.pytest
            else bench_tiers.tier_runs(full=args.full, shards=args.shards))
    out = Path(args.out)
    if out.is_dir() or (out.exists() and not bench_results.is_result(out)):
        raise UsageError(f"--out {out}: {'is a folder' if out.is_dir() else 'holds a file parity bench did not write'}; "
                         f"name another file")
    progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    save = lambda result: bench_results.write(result, out)  # noqa: E731 - after each part: an interrupted bench keeps its numbers
    # the gate's bare cost needs the extended cases' forwards: timed when the default cases are
    extended = [c.name for c in cases_in("extended")] if set(cases) >= {c.name for c in cases_in("default")} else []
    result = bench.run(chosen, args.repeat, progress=progress, extended=extended, save=save)
    bench_tiers.time_pytest_runs(result, runs, Path.cwd(), progress=progress, save=save)
    result["state"] = "complete"
    print(bench_results.format_table(result))
    path = bench_results.write(result, out)
    print(f"wrote {path}")
    if old is not None:
        print()
        print(bench_results.compare(result, old))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parity", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ptycho-parity {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("cases", help="list the named parity cases")
    p.add_argument("--case-file", action="append", metavar="FILE", default=[],
                   help="also list the cases of a TOML case file (repeatable; see docs/cases.md)")
    p.set_defaults(func=_cmd_cases)

    p = sub.add_parser("backends", help="list the installed backends (built-in and from entry points)")
    p.set_defaults(func=_cmd_backends)

    p = sub.add_parser("make-fixture", help="(re)generate the shipped fly001-format fixture")
    from parity.inputs.fixture import FIXTURE_N128_PATH, FIXTURE_PATH

    p.add_argument("--N", type=int, choices=(64, 128), default=64,
                   help="detector size: 64 (16x16 scan) or 128 (8x8 scan, for the N=128 cases)")
    p.add_argument("--out", help=f"output NPZ (default: {FIXTURE_PATH} or, with --N 128, "
                                 f"{FIXTURE_N128_PATH.name} beside it)")
    p.add_argument("--probe", metavar="NPZ", help="simulate with this probe (key probeGuess) instead of the "
                                                  "synthetic one; for manual checks, never for the shipped fixture")
    p.set_defaults(func=_cmd_make_fixture)

    from parity.run.results import EXIT_CODES_HELP

    p = sub.add_parser("check", help="run both backends on the cases, compare stage by stage, write the report",
                       description="Run the reference and each candidate on the cases and run every check their "
                                   "capabilities allow: forward agreement, train/infer paths, checkpoint round trip, "
                                   "cross-backend checkpoint, golden, gradients (--grad), training (--train-steps). "
                                   + EXIT_CODES_HELP + ".")
    _case_options(p, "default", "which set of built-in cases to run", files="your own cases, from a TOML file "
                  "(repeatable; a file's case is a --case NAME too)")
    add_check_options(p)
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("record", help="run the reference and record what it computed, to check ports against "
                                      "elsewhere (--ref recorded:DIR)")
    _case_options(p, "default", files="your own cases, from a TOML case file (repeatable)")
    add_record_options(p)
    p.set_defaults(func=_cmd_record)

    p = sub.add_parser("calibrate", help="measure each stage's disagreement of honest implementations over cases and "
                                         "weight seeds and propose per-stage bounds for the tolerance file")
    _case_options(p, "all", files="your cases too, from a TOML case file (repeatable)")
    add_calibrate_options(p)
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("refresh", help="regenerate golden JSON from the float64 CPU reference run")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--failing", dest="mode", action="store_const", const="failing",
                      help="only goldens that are missing, corrupt or out of tolerance (default)")
    mode.add_argument("--all", dest="mode", action="store_const", const="all", help="every golden of the chosen cases")
    mode.add_argument("--new", dest="mode", action="store_const", const="new", help="only missing goldens")
    p.set_defaults(mode="failing")
    _case_options(p, "all", files="goldens for your own cases, from a TOML file (repeatable; needs --goldens DIR)")
    p.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    p.add_argument("--goldens", metavar="DIR", help="golden folder (default: the project's fixtures/goldens)")
    p.add_argument("--allow-ci", action="store_true", help="write even though CI is set")
    p.add_argument("--recompute", action="store_true",
                   help="run the reference even where a golden's fingerprint shows nothing that decides it "
                        "has changed (--failing and --new trust a matching fingerprint; --all always runs)")
    p.set_defaults(func=_cmd_refresh)

    p = sub.add_parser("bench", help="measure imports, builds, forwards, gradients, the harness and the test tiers")
    _case_options(p, "default", "which cases to time", files="also time your own cases, from a TOML case file "
                  "(repeatable)")
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions after a warm-up (median; default 5)")
    p.add_argument("--pytest", action="append", metavar="ARGS",
                   help="pytest arguments to time cold in a subprocess (repeatable; default: the gate, as "
                        "`pytest -k parity` and as `make test` runs it)")
    p.add_argument("--full", action="store_true", help="also time the full tier (`make test-full`), unsharded")
    p.add_argument("--shards", type=int, default=0, metavar="N",
                   help="also time each of the full tier's N shards (pytest-split, as CI runs them)")
    p.add_argument("--no-pytest", action="store_true", help="skip the pytest timing")
    p.add_argument("--out", default="bench.json", help="where to write the result (default: %(default)s)")
    p.add_argument("--compare", metavar="OLD.json", help="print new/old ratios against an earlier bench.json")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("faults", help="inject the catalogue of porting bugs one by one and show what the harness blames")
    p.add_argument("--fault", action="append", metavar="NAME", help="one fault (repeatable; default: all)")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown (for the README)")
    p.add_argument("--ref", default="tensorflow", choices=("tensorflow", "numpy"),
                   help="the reference the faulty port is compared with (default: %(default)s; numpy needs no "
                        "TensorFlow)")
    p.set_defaults(func=_cmd_faults)
    return parser


def main(argv: Optional[Sequence[str]] = None, reuse: Sequence[str] = ()) -> int:
    """The command line. `reuse`: backends whose model and traces `parity check` may take from
    this process's cache (`parity.run.cache`) instead of building them; for in-process callers that
    patch only the other backends (tests of a broken port against the untouched reference). The
    console command builds everything."""
    from parity.config import ConfigError
    from parity.inputs.data import DataError
    from parity.goldens.store import GoldenError
    from parity.run.tolerances import ToleranceError
    from parity.inputs.weights import WeightError

    from parity.backends import BackendError

    from parity.files import OutputRefused

    bad_input = (UsageError, DataError, ConfigError, WeightError, ToleranceError, GoldenError, BackendError,
                 OutputRefused)

    args = build_parser().parse_args(argv)
    args.reuse = tuple(reuse)
    args.console = argv is None
    if args.command in ("check", "refresh", "faults", "record", "calibrate"):  # the engine's errors exist once it is importable
        from parity.run.backend_run import DeviceUnavailable

        bad_input += (DeviceUnavailable,)
    try:
        return args.func(args)
    except bad_input as exc:
        print(f"parity: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. an --out folder that cannot be written, a full disk
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"parity: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("parity: interrupted", file=sys.stderr)
        return 130
