#!/usr/bin/env python3
"""The prepared device check: the CUDA gate on a machine that has torch with CUDA and no
TensorFlow and no network (the reference is the numpy backend on the CPU; the goldens, made by
TensorFlow, judge both sides).

    python scripts/gpu_check.py [--out DIR] [--wheels DIR] [--device cuda|cpu] [--dry-run]

It installs nothing from the network: the working tree goes on PYTHONPATH, and the few packages
such a machine lacks (pytest-regressions, pytest-datadir, PyYAML) are installed from wheel files in
`--wheels` (default `.whl/`, filled beforehand on a machine with a network by `make wheels`) into
a folder of its own. It runs

  1. `pytest -k parity --parity-device cuda --parity-ref numpy --require-cuda` (default cases,
     float32 and float64), and
  2. `parity check --device cuda --ref numpy --grad --train-steps 3` (default cases, both dtypes),
  3. `parity calibrate --device cuda --ref numpy` (default cases, float32): the measured noise of
     each stage on this GPU and the bounds proposed from it, into calibration-cuda.toml (a
     proposal to review and merge into the tolerance file; the shipped CUDA bounds are unchanged),

(with `--record DIR`, `--parity-ref recorded:DIR` and `--ref recorded:DIR` in place of numpy:
TensorFlow's own numbers, recorded on any CPU machine that has TensorFlow with `parity record
--grad --train-steps 3 --out DIR`), then writes to `--out` (default `$OUT`, else `gpu-check/`): summary.json (environment, the flags
each side applied, each step's exit code and time, the worst error per stage and dtype),
report.md (the parity report), summary.md (its table), calibration-<device>.toml, pytest.txt,
check.txt, calibrate.txt and timing.txt.
`--device cpu` rehearses the same on a machine without a GPU; `--dry-run` prints what it would
do and checks what it needs. Exit code: 0 when every step passes, 1 when one fails, 2 when the
machine lacks what it needs. numpy and the standard library only; torch is looked at in a
subprocess.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# import name -> distribution (wheel) name; what the gate imports besides the working tree
NEEDED = {"numpy": "numpy", "torch": "torch", "matplotlib": "matplotlib", "pytest": "pytest",
          "xdist": "pytest-xdist", "pytest_regressions": "pytest-regressions", "pytest_datadir": "pytest-datadir",
          "yaml": "PyYAML"}
FROM_WHEELS = ("pytest-regressions", "pytest-datadir", "PyYAML")  # small, pure Python or one wheel each
TRAIN_STEPS = 3


def missing_modules() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def wheels_for(dists: list[str], folder: Path) -> dict[str, Path | None]:
    """The wheel file in `folder` for each distribution (None where there is none)."""
    files = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    norm = lambda s: s.lower().replace("-", "_").replace(".", "_")  # noqa: E731  as wheel file names spell it
    return {d: next((f for f in files if norm(f.name.split("-")[0]) == norm(d)), None) for d in dists}


def plugin_registered() -> bool:
    """True when the parity pytest plugin is installed (entry point), so `-p` must not load it twice."""
    return any(ep.name == "ptycho_parity" for ep in importlib.metadata.entry_points(group="pytest11"))


def torch_report(env: dict) -> dict:
    """torch's version and what it sees of CUDA, from a fresh process (so nothing is imported here)."""
    code = ("import json, torch; ok = torch.cuda.is_available(); "
            "print(json.dumps({'torch': torch.__version__, 'cuda_available': ok, "
            "'cuda_version': torch.version.cuda, 'device_name': torch.cuda.get_device_name(0) if ok else None}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        return {"torch": None, "error": done.stderr.strip().splitlines()[-1:] or ["torch does not import"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def commands(device: str, work: Path, ref: str = "numpy") -> dict[str, list[str]]:
    """The three steps, as argument lists for this Python; `ref`: numpy, or recorded:DIR (which
    holds the cases' own weights only: one seed, the cases')."""
    workers = str(max(1, min(8, (os.cpu_count() or 2) // 2)))
    pytest = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs", "-n", workers,
              "-k", "parity", "--parity-ref", ref, "--parity-device", device,
              "--parity-dump", str(work / "dump")]
    if not plugin_registered():
        pytest[3:3] = ["-p", "parity.plugin.pytest_plugin"]
    if device == "cuda":
        pytest.append("--require-cuda")
    check = [sys.executable, "-m", "parity", "check", "--device", device, "--ref", ref, "--grad",
             "--train-steps", str(TRAIN_STEPS), "--no-figures", "--out", str(work / "report"),
             "--summary-md", str(work / "summary.md")]
    calibrate = [sys.executable, "-m", "parity", "calibrate", "--device", device, "--ref", ref, "--cases", "default",
                 "--seeds", "1" if ref.startswith("recorded:") else "2", "--out", str(work / f"calibration-{device}.toml")]
    return {"pytest": pytest, "check": check, "calibrate": calibrate}


def worst_per_stage(report: Path) -> dict:
    """dtype -> stage -> the largest relative error over the cases (candidate vs reference), with
    the devices each side ran on."""
    out: dict = {}
    for path in sorted(report.glob("*/stats.json")):
        for dtype, run in json.loads(path.read_text()).items():
            table = out.setdefault(dtype, {})
            for cand, entry in run.get("per_candidate", {}).items():
                for stage in entry["comparison"]["stages"]:
                    err = stage.get("rel_error")
                    if err is not None and err > table.get(stage["stage"], {}).get("rel_error", -1.0):
                        table[stage["stage"]] = {"rel_error": err, "tolerance": stage.get("tolerance"),
                                                 "case": path.parent.name, "candidate": cand}
    return out


def flags_of(report: Path) -> dict:
    """The precision and determinism flags each side applied, from the first run's provenance."""
    for path in sorted(report.glob("*/stats.json")):
        for run in json.loads(path.read_text()).values():
            prov = run.get("provenance", {})
            return {"devices": prov.get("devices"), "flags": prov.get("flags")}
    return {}


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu-check",
                        help="where the results go (default: $OUT, else gpu-check/)")
    parser.add_argument("--wheels", default=str(ROOT / ".whl"), help="folder of wheel files (default: .whl/)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="the port's device (default: cuda; cpu rehearses the check without a GPU)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and what is missing; run nothing")
    parser.add_argument("--record", metavar="DIR",
                        help="check against TensorFlow's recorded numbers instead of the numpy reference: a record "
                             "made on any CPU machine with TensorFlow by `parity record --grad --train-steps 3 "
                             "--out DIR` (default cases, both dtypes)")
    args = parser.parse_args(argv)
    if args.record and not (Path(args.record) / "record.json").is_file():
        print(f"gpu-check: --record {args.record}: not a record (no record.json)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    out = Path(args.out)
    site = Path(tempfile.gettempdir(), "gpu-check-site")  # the wheels' packages, installed for this run
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(site), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"

    # look for packages and entry points where the steps will: the working tree is on their path
    # (an egg-info there registers the plugin already), and so are the wheels' packages
    sys.path[:0] = [str(ROOT), str(site)]
    lacking = missing_modules()
    dists = [NEEDED[m] for m in lacking]
    wheels = wheels_for([d for d in dists if d in FROM_WHEELS], Path(args.wheels))
    unfixable = [d for d in dists if d not in FROM_WHEELS or wheels.get(d) is None]
    print(f"gpu-check: python {sys.version.split()[0]}, working tree {ROOT}, results in {out}/")
    print(f"  missing here: {', '.join(dists) or 'nothing'}")
    for dist, wheel in wheels.items():
        print(f"  {dist}: {'from ' + wheel.name if wheel else 'NO WHEEL in ' + args.wheels}")
    # the full report lives in a folder of its own; $OUT gets the few files listed above
    work = Path(tempfile.gettempdir(), "gpu-check-work-…") if args.dry_run else Path(tempfile.mkdtemp(prefix="gpu-check-work-"))
    plan = commands(args.device, work, f"recorded:{Path(args.record).resolve()}" if args.record else "numpy")
    for name, cmd in plan.items():
        print(f"  step {name}: {' '.join(cmd[1:])}")
    if unfixable:
        print(f"gpu-check: cannot run: {', '.join(unfixable)} is not installed and has no wheel in {args.wheels} "
              f"(fill it on a machine with a network: `make wheels`)", file=sys.stderr)
        return 2
    if args.dry_run:
        print("gpu-check: dry run, nothing run")
        return 0
    if wheels:
        shutil.rmtree(site, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                        "--disable-pip-version-check", "--target", str(site), *map(str, wheels.values())],
                       check=True, env={**env, "PIP_ROOT_USER_ACTION": "ignore"})  # device runs are root
    machine = torch_report(env)
    print(f"  torch {machine.get('torch')}, CUDA {machine.get('cuda_version')}, "
          f"available: {machine.get('cuda_available')} {machine.get('device_name') or ''}", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    steps = {}
    for name, cmd in plan.items():
        print(f"gpu-check: {name} ...", flush=True)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        (out / f"{name}.txt").write_text(done.stdout + ("\n--- stderr ---\n" + done.stderr if done.stderr else ""))
        steps[name] = {"returncode": done.returncode, "seconds": round(seconds, 1), "last_line": last_line(done.stdout),
                       "command": " ".join(cmd[1:])}
        print(f"  exit {done.returncode} in {seconds:.1f} s: {steps[name]['last_line']}", flush=True)

    report = work / "report"
    for name in ("report.md", "summary.md", f"calibration-{args.device}.toml"):
        source = report / name if name == "report.md" else work / name
        if source.exists():
            shutil.copyfile(source, out / name)
    total = time.perf_counter() - start
    timing = (f"gpu-check: pytest {steps['pytest']['seconds']} s, parity check {steps['check']['seconds']} s, "
              f"parity calibrate {steps['calibrate']['seconds']} s, "
              f"total {total:.1f} s wall on {machine.get('device_name') or args.device}")
    (out / "timing.txt").write_text(timing + "\n")
    summary = {"device": args.device, "machine": machine, "python": sys.version.split()[0],
               "installed_from_wheels": [w.name for w in wheels.values()], "steps": steps,
               "sides": flags_of(report), "worst_per_stage": worst_per_stage(report), "total_seconds": round(total, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    print(timing)
    print(f"gpu-check: the full report (per case and dtype, and the dumps of failing goldens) is in {work}/")
    failed = [name for name, step in steps.items() if step["returncode"] != 0]
    print(f"gpu-check: {'FAILED: ' + ', '.join(failed) if failed else 'every step passes'}; results in {out}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
