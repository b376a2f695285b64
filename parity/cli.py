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
    from parity.inputs.cases import format_case_table

    print(format_case_table())
    return 0


def _cmd_make_fixture(args: argparse.Namespace) -> int:
    from parity.inputs.fixture import FIXTURE_N128_PATH, FIXTURE_PATH, FixtureSpec, is_shipped, make_fixture, readme_path
    from parity.resources import INSTALLED

    probe = Path(args.probe) if args.probe else None
    default_out = {64: FIXTURE_PATH, 128: FIXTURE_N128_PATH}[args.N]
    out = Path(args.out or default_out)
    if probe is not None and is_shipped(out):
        raise UsageError(f"--probe {probe}: a fixture made with another probe is for manual --data checks and never "
                         f"replaces the shipped {out}; name where to write it with --out FILE.npz")
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


def _unique_cases(args: argparse.Namespace) -> list:
    """The chosen cases, each once (a repeated --case runs once)."""
    from parity.inputs.cases import cases_in, get_case

    try:
        return [get_case(n) for n in dict.fromkeys(args.case)] if args.case else cases_in(args.cases)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None


def _preflight(args: argparse.Namespace, cases: list, devices: dict, dtypes: list) -> dict[str, str]:
    """Read every input of the run before any model is built: the tolerance profiles, each case's
    inputs, the golden folder and each case's golden. A bad tolerance file or input is one line
    and exit 2 (UsageError and friends, raised); a corrupt golden is that case's error, returned
    (case -> message) and printed, and the other cases still run."""
    from parity.goldens.store import GoldenError, golden_path, load_golden, load_golden_profile
    from parity.run.tolerances import load_profile

    use_goldens = not args.data
    if args.goldens and not Path(args.goldens).is_dir():
        raise UsageError(f"--goldens {args.goldens}: no such folder (the golden check would silently have "
                         f"nothing to compare with)")
    if args.summary_md:
        target = Path(args.summary_md)
        if target.is_dir() or not target.parent.is_dir():
            raise UsageError(f"--summary-md {args.summary_md}: "
                             f"{'is a folder' if target.is_dir() else 'its folder does not exist'}")
    for dtype in dtypes:
        for device in dict.fromkeys(devices.values()):
            load_profile(device, dtype)
            if use_goldens:
                load_golden_profile(device, dtype)
    bad: dict[str, str] = {}
    for case in cases:
        case.inputs("float64", data=args.data)  # too few points, all-zero groups: DataError, one line
        path = golden_path(case.name, args.goldens)
        if use_goldens and path.exists():
            try:
                load_golden(path)
            except GoldenError as exc:
                bad[case.name] = str(exc)
                print(f"parity: error: {exc}; {case.name} runs without its golden check, the other cases as "
                      f"usual (exit code 2)", file=sys.stderr, flush=True)
    return bad


def _cmd_check(args: argparse.Namespace) -> int:
    from parity.inputs.data import load_scan
    from parity.report import dump
    from parity.files import COMPLETE, FAILED, INTERRUPTED, RUNNING, RunFolder
    from parity.report.markdown import write_report
    from parity.run.engine import run_case
    from parity.run.results import EXIT_BAD_INPUT, exit_code

    cases = _unique_cases(args)
    if args.data:
        scan = load_scan(args.data)  # fail fast, one line, before any model is built
        other_n = [c for c in cases if c.config.N != scan.N]
        if other_n and len(other_n) == len(cases):
            raise UsageError(f"{args.data}: patterns are {scan.N}x{scan.N}, but every chosen case needs "
                             f"N={sorted({c.config.N for c in other_n})}")
        for case in other_n:
            print(f"skipping {case.name}: it needs N={case.config.N}, {args.data} has {scan.N}x{scan.N} patterns")
        cases = [c for c in cases if c.config.N == scan.N]
    from parity.backends import get_backend
    from parity.run.backend_run import backend_devices

    candidates = [c for c in dict.fromkeys(args.candidate or ["torch"]) if c != args.ref]
    for name in [args.ref, *candidates]:
        get_backend(name).require()  # unknown or not installed: one line, before any model is built
    if not candidates:
        raise UsageError(f"--candidate: give at least one backend other than the reference {args.ref!r}")
    devices = backend_devices(args.ref, candidates, args.device, args.ref_device)
    if args.train_steps < 0:
        raise UsageError(f"--train-steps must be >= 0, got {args.train_steps}")
    dtypes = list(dump.iter_dtypes(args.dtype))
    bad_goldens = _preflight(args, cases, devices, dtypes)
    out = Path(args.out)
    folder = RunFolder(out, command="parity check", force=args.force).open()
    total = len(cases) * len(dtypes)
    where = lambda names: ", ".join(f"{n} on {devices[n]}" for n in names)  # noqa: E731
    print(f"parity check: {where([args.ref])} (reference) vs {where(candidates)}; "
          f"{len(cases)} case(s) x {len(dtypes)} dtype(s); "
          f"data {args.data or 'shipped fly001 fixture'}; report in {out}/", flush=True)
    results, figures, n = [], {}, 0
    state = FAILED
    try:
        write_report(results, out, figures, state=RUNNING, planned=total)
        for case in cases:
            for dtype in dtypes:
                n += 1
                print(f"[{n}/{total}] {case.name} {dtype} ...", end=" ", flush=True)
                result = run_case(case, device=args.device, ref_device=args.ref_device, dtype=dtype, data=args.data,
                                  goldens_dir=args.goldens,
                                  ref=args.ref, candidates=candidates, grad=args.grad, train_steps=args.train_steps,
                                  reuse=args.reuse,
                                  repro_dir=Path(args.repro) if args.repro else out / case.name / "repro")
                figures[(case.name, dtype)] = dump.dump_case(result, out, figures=not args.no_figures,
                                                             fresh=dtype == dtypes[0])
                print(f"{result.verdict()} ({dump.worst_line(result)}, {result.seconds:.1f} s)", flush=True)
                for line in result.check_lines(every=not args.brief):
                    print("      " + line.replace("\n", "\n      "), flush=True)
                if args.compare_paths:
                    print(dump.compare_paths_text(result), flush=True)
                for message in result.golden_messages():
                    print("      " + message.replace("\n", "\n      "), flush=True)
                results.append(result)
                write_report(results, out, figures, state=RUNNING, planned=total)  # an interrupted run says so
                folder.record()
        state = COMPLETE
    except KeyboardInterrupt:
        state = INTERRUPTED
        raise
    finally:
        try:
            report = write_report(results, out, figures, state=state, planned=total)
        finally:
            folder.close(state)
    print()
    print(dump.summary_table(results))
    code = exit_code([c for r in results for c in r.results])
    if bad_goldens:
        code = EXIT_BAD_INPUT
    failed = [r for r in results if not r.passed]
    print(f"\n{len(results) - len(failed)}/{len(results)} runs agree; report: {report}")
    if args.summary_md:
        from parity.files import write_atomic

        try:
            write_atomic(args.summary_md, dump.summary_markdown(results))
        except OSError as exc:  # the verdict above stands; the exit code says something went wrong
            print(f"parity: error: --summary-md {args.summary_md}: {exc.strerror or exc}", file=sys.stderr)
            code = code or EXIT_BAD_INPUT
    return code


def _cmd_refresh(args: argparse.Namespace) -> int:
    from parity.goldens import store as goldens
    from parity.goldens.refresh import apply, format_plan, plan
    from parity.resources import INSTALLED

    cases = _unique_cases(args)
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

    from parity.bench import measure as bench, tiers as bench_tiers
    from parity.inputs.cases import cases_in

    cases = [c.name for c in _unique_cases(args)]
    if args.repeat < 1:
        raise UsageError(f"--repeat must be >= 1, got {args.repeat}")
    old = None
    if args.compare:
        try:
            old = bench.load(Path(args.compare))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.shards < 0:
        raise UsageError(f"--shards must be >= 0, got {args.shards}")
    runs = ([] if args.no_pytest else [shlex.split(a) for a in args.pytest] if args.pytest
            else bench_tiers.tier_runs(full=args.full, shards=args.shards))
    out = Path(args.out)
    if out.is_dir() or (out.exists() and not bench.is_result(out)):
        raise UsageError(f"--out {out}: {'is a folder' if out.is_dir() else 'holds a file parity bench did not write'}; "
                         f"name another file")
    progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    save = lambda result: bench.write(result, out)  # noqa: E731 - after each part: an interrupted bench keeps its numbers
    # the gate's bare cost needs the extended cases' forwards: timed when the default cases are
    extended = [c.name for c in cases_in("extended")] if set(cases) >= {c.name for c in cases_in("default")} else []
    result = bench.run(cases, args.repeat, progress=progress, extended=extended, save=save)
    bench_tiers.time_pytest_runs(result, runs, Path.cwd(), progress=progress, save=save)
    result["state"] = "complete"
    print(bench.format_table(result))
    path = bench.write(result, out)
    print(f"wrote {path}")
    if old is not None:
        print()
        print(bench.compare(result, old))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parity", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ptycho-parity {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("cases", help="list the named parity cases")
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
    p.add_argument("--cases", choices=("default", "extended", "all"), default="default",
                   help="which set of cases to run (default: %(default)s; see `parity cases`)")
    p.add_argument("--case", action="append", metavar="NAME",
                   help="one case to run (repeatable; overrides --cases)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="device of the candidates (default: %(default)s; the numpy backend always runs on the CPU)")
    p.add_argument("--ref-device", choices=("cpu", "cuda"), default=None,
                   help="device of the reference (default: cpu, whatever --device says: the usual setup is "
                        "the reference on the CPU and the port on the GPU)")
    p.add_argument("--dtype", choices=("float32", "float64", "all"), default="all",
                   help="precision (default: %(default)s)")
    p.add_argument("--data", help="any fly001-format NPZ; the cases are rebuilt on it "
                                  "(default: the shipped fixture)")
    p.add_argument("--out", default="parity-report",
                   help="report folder (default: %(default)s/); parity writes only files of its own there and, "
                        "on the next run, removes only those (listed in its .parity-run.json)")
    p.add_argument("--force", action="store_true",
                   help="write into an --out folder that holds files parity did not write (they are kept)")
    p.add_argument("--summary-md", metavar="PATH", help="also write the markdown summary table here (CI job summary)")
    p.add_argument("--ref", default="tensorflow", metavar="BACKEND",
                   help="the reference backend (default: %(default)s; see `parity backends`)")
    p.add_argument("--candidate", action="append", metavar="BACKEND",
                   help="a backend to compare with the reference (repeatable; default: torch)")
    p.add_argument("--brief", action="store_true",
                   help="under each run, list the passed checks on one line (default: one line per check)")
    p.add_argument("--compare-paths", action="store_true",
                   help="per backend, print the training path next to the saved -> loaded inference path "
                        "(patch statistics, ranges, canvas, offsets, first stage where they part)")
    p.add_argument("--grad", action="store_true",
                   help="also compare the loss and the gradient of every weight and of log_scale (backward order)")
    p.add_argument("--train-steps", type=int, default=0, metavar="K",
                   help="also run K Adam steps (Keras' Adam, lr 1e-3, epsilon 1e-7) from the same weights on "
                        "both sides and compare the loss and every weight after each step")
    p.add_argument("--goldens", metavar="DIR", help="golden folder to compare with (default: the shipped goldens; "
                                                    "not used with --data)")
    p.add_argument("--no-figures", action="store_true",
                   help="write the JSON files and the report without the PNG figures (drawing them is most of "
                        "the harness's own time: about 2.5 s per case and dtype)")
    p.add_argument("--repro", metavar="DIR", default=None,
                   help="where to write a minimal reproduction of each origin of a divergence (an NPZ of the "
                        "reference's inputs to the stage and both outputs, and a standalone script that "
                        "prints the local error; default: <out>/<case>/repro)")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("refresh", help="regenerate golden JSON from the float64 CPU reference run")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--failing", dest="mode", action="store_const", const="failing",
                      help="only goldens that are missing, corrupt or out of tolerance (default)")
    mode.add_argument("--all", dest="mode", action="store_const", const="all", help="every golden of the chosen cases")
    mode.add_argument("--new", dest="mode", action="store_const", const="new", help="only missing goldens")
    p.set_defaults(mode="failing")
    p.add_argument("--cases", choices=("default", "extended", "all"), default="all",
                   help="which set of cases (default: %(default)s)")
    p.add_argument("--case", action="append", metavar="NAME", help="one case (repeatable; overrides --cases)")
    p.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    p.add_argument("--goldens", metavar="DIR", help="golden folder (default: the project's fixtures/goldens)")
    p.add_argument("--allow-ci", action="store_true", help="write even though CI is set")
    p.add_argument("--recompute", action="store_true",
                   help="run the reference even where a golden's fingerprint shows nothing that decides it "
                        "has changed (--failing and --new trust a matching fingerprint; --all always runs)")
    p.set_defaults(func=_cmd_refresh)

    p = sub.add_parser("bench", help="measure imports, builds, forwards, gradients, the harness and the test tiers")
    p.add_argument("--cases", choices=("default", "extended", "all"), default="default",
                   help="which cases to time (default: %(default)s)")
    p.add_argument("--case", action="append", metavar="NAME", help="one case (repeatable; overrides --cases)")
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
    if args.command in ("check", "refresh", "faults"):  # the engine's errors exist once it is importable
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
