"""The `parity check` job: every input read before any model is built, the run folder opened (and
locked), each case and dtype run through the engine, the report and summary written after each,
and the exit code. The command line (`parity.cli`) hands it its arguments."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from parity.errors import UsageError
from parity.inputs.casefile import chosen_cases


def add_check_options(p: argparse.ArgumentParser) -> None:
    """The options of `parity check` besides the case options (parity.cli)."""
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
                   help="the reference backend (default: %(default)s; see `parity backends`), or recorded:DIR, a "
                        "record made by `parity record` (no reference framework needed)")
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
    p.add_argument("--save-trained", metavar="DIR",
                   help="with --train-steps K: save each backend's model after its K Adam steps, in its own "
                        "format, as DIR/<case>-<backend>-<dtype>.ckpt (trained weights and state for a case file's "
                        "[case.weights] checkpoint)")


def _preflight(args: argparse.Namespace, cases: list, devices: dict, dtypes: list) -> dict[str, str]:
    """Read every input of the run before any model is built: the tolerance profiles, each case's
    inputs, the golden folder and each case's golden. A bad tolerance file or input is one line
    and exit 2 (UsageError and friends, raised); a corrupt golden is that case's error, returned
    (case -> message) and printed, and the other cases still run."""
    from parity.backends import get_backend
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
    if get_backend(args.ref).recorded:
        from parity.recorded.backend import check_entries

        check_entries(args.ref, cases, dtypes, args.data, grad=args.grad, train_steps=args.train_steps)
    bad: dict[str, str] = {}
    for case in cases:
        if args.data:  # the shipped fixture fits every case; a user's scan may not (DataError, one line)
            case.inputs("float64", data=args.data)
        for dtype in dtypes if case.checkpoint is not None else ():  # read by its backend, checked against the config
            case.checkpoint.read(case.config, dtype)
        path = golden_path(case.name, args.goldens)
        if use_goldens and path.exists():
            try:
                load_golden(path)
            except GoldenError as exc:
                bad[case.name] = str(exc)
                print(f"parity: error: {exc}; {case.name} runs without its golden check, the other cases as "
                      f"usual (exit code 2)", file=sys.stderr, flush=True)
    return bad


def check(args: argparse.Namespace) -> int:
    """`parity check`: read every input, open the run folder, run each case and dtype, write the
    report as the run goes; the exit code."""
    from parity.inputs.data import load_scan
    from parity.report import dump
    from parity.files import COMPLETE, FAILED, INTERRUPTED, RUNNING, RunFolder, write_atomic
    from parity.report.markdown import write_report
    from parity.run.engine import RunRequest, run_case
    from parity.run.results import EXIT_BAD_INPUT, exit_code

    cases = chosen_cases(args.case, args.cases, args.case_file)
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
    from parity.inputs.fixture import is_shipped
    from parity.run.backend_run import backend_devices, require_device

    from parity.recorded.backend import register_reference

    register_reference(args.ref)  # recorded:DIR, a record replayed as the reference (parity.recorded)
    candidates = [c for c in dict.fromkeys(args.candidate or ["torch"]) if c != args.ref]
    for name in [args.ref, *candidates]:
        get_backend(name).require()  # unknown or not installed: one line, before any model is built
    if not candidates:
        raise UsageError(f"--candidate: give at least one backend other than the reference {args.ref!r}")
    devices = backend_devices(args.ref, candidates, args.device, args.ref_device)
    require_device(devices)  # the frameworks imported (and their import-time log written) before any progress line
    if args.train_steps < 0:
        raise UsageError(f"--train-steps must be >= 0, got {args.train_steps}")
    if args.save_trained and not args.train_steps:
        raise UsageError("--save-trained: give --train-steps K (the models it saves are those after K Adam steps)")
    dtypes = list(dump.iter_dtypes(args.dtype))
    bad_goldens = _preflight(args, cases, devices, dtypes)
    out = Path(args.out)
    folder = RunFolder(out, command="parity check", force=args.force).open()
    total = len(cases) * len(dtypes)
    where = lambda names: ", ".join(f"{n} on {devices[n]}" for n in names)  # noqa: E731
    own_data = {c.name: str(c.data) for c in cases if not args.data and not is_shipped(c.data)}
    data = args.data or ("; ".join(f"{name}: {path}" for name, path in own_data.items()) if own_data
                         else "shipped fly001 fixture")
    print(f"parity check: {where([args.ref])} (reference) vs {where(candidates)}; "
          f"{len(cases)} case(s) x {len(dtypes)} dtype(s); data {data}; report in {out}/", flush=True)
    for case in cases:
        if case.checkpoint is not None:
            source = case.checkpoint.describe()
            print(f"  {case.name}: trained weights and state from {source['file']} (read by {source['backend']}, "
                  f"sha256 {source['sha256'][:12]})", flush=True)
    results, figures, n = [], {}, 0
    state = FAILED
    try:
        write_report(results, out, figures, state=RUNNING, planned=total)
        for case in cases:
            for dtype in dtypes:
                n += 1
                print(f"[{n}/{total}] {case.name} {dtype} ...", end=" ", flush=True)
                request = RunRequest(device=args.device, ref_device=args.ref_device, dtype=dtype, data=args.data,
                                     goldens_dir=args.goldens, ref=args.ref, candidates=tuple(candidates),
                                     grad=args.grad, train_steps=args.train_steps, reuse=tuple(args.reuse),
                                     repro_dir=Path(args.repro) if args.repro else out / case.name / "repro",
                                     save_trained=args.save_trained)
                result = run_case(case, request)
                figures[(case.name, dtype)] = dump.dump_case(result, out, figures=not args.no_figures,
                                                             fresh=dtype == dtypes[0])
                print(f"{result.headline()} ({dump.worst_line(result)}, {result.seconds:.1f} s)", flush=True)
                for line in figures[(case.name, dtype)]:  # a figure that could not be drawn (a full disk)
                    if isinstance(line, str):
                        print(f"      {line}", flush=True)
                for line in result.check_lines(every=not args.brief):
                    print("      " + line.replace("\n", "\n      "), flush=True)
                saved = {n: p for r in result.of("training") for n, p in r.extra.get("saved", {}).items()}
                for name, path in saved.items():
                    print(f"      saved {name}'s trained model: {path}", flush=True)
                if args.save_trained and not saved:
                    print(f"      nothing saved to {args.save_trained}: no model took its Adam steps here "
                          f"(see the training check)", flush=True)
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
        try:
            write_atomic(args.summary_md, dump.summary_markdown(results))
        except OSError as exc:  # the verdict above stands; the exit code says something went wrong
            print(f"parity: error: --summary-md {args.summary_md}: {exc.strerror or exc}", file=sys.stderr)
            code = code or EXIT_BAD_INPUT
    return code
