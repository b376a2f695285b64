"""The test tiers `parity bench` times: each pytest run in a fresh subprocess, with its wall
time, the time to its first result and the peak RSS of every test process (read from the probe
plugin `parity.bench.probe`, loaded into each of them with `-p`). Each run is cold — its own
empty reference cache (`--parity-cache-dir`) — except a run labelled WARM, which reads the cache
the run before it filled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from parity.bench.clock import timed


def pytest_wall(args: Sequence[str], cwd: Path, label: str = "") -> dict:
    """`python -m pytest …` cold in a fresh subprocess: wall time, exit code, the last line pytest
    printed, the seconds from the start to its first test result, and the peak RSS (MB) of every
    test process (the main one and each xdist worker; −1 where /proc is missing) and the CPU
    seconds (user + system) of each and in all, from the probe plugin `parity.bench.probe`."""
    from parity.bench.probe import ENV

    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "parity.bench.probe", *args]
    with tempfile.TemporaryDirectory(prefix="parity-bench-probe-") as probe:
        env = {k: v for k, v in os.environ.items() if k != "CI"}
        env[ENV] = probe
        launched = time.time()
        seconds, done = timed(lambda: subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env))
        records = [json.loads(p.read_text()) for p in sorted(Path(probe).glob("*.json"))]
    lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
    summary = lines[-1] if lines else (done.stderr.strip().splitlines() or [""])[-1]
    first = next((r["first_result_at"] for r in records if r.get("first_result_at")), None)
    first_run = next((r["first_run_at"] for r in records if r.get("first_run_at")), None)
    processes = {r["process"]: r["peak_rss_mb"] for r in records}
    cpu = {r["process"]: r["cpu_user_s"] + r["cpu_system_s"] for r in records if "cpu_user_s" in r}
    return {"label": label or " ".join(["pytest", *args]), "command": " ".join(["pytest", *args]),
            "wall_s": seconds, "returncode": done.returncode, "summary": summary,
            "first_result_s": first - launched if first is not None else None,
            "first_run_s": first_run - launched if first_run is not None else None,
            "peak_rss_mb_by_process": processes,
            "peak_rss_mb_max": max(processes.values(), default=-1.0),
            "cpu_s_by_process": cpu, "cpu_s": sum(cpu.values()) if cpu else None}


WARM = "(warm: the reference replayed from the cache the run before filled)"


def tier_runs(full: bool = False, shards: int = 0) -> list[tuple[str, list[str]]]:
    """(label, pytest arguments) of the test tiers: the gate as `pytest -k parity` and as `make
    test` runs it (the whole gate tier), and with `full` the full tier unsharded and, with `shards`
    N, each of its N shards (pytest-split, as the workflow's matrix runs them)."""
    runs = [("gate: pytest -k parity", ["-k", "parity"]), (f"gate: pytest -k parity {WARM}", ["-k", "parity"]),
            ("gate: make test (whole gate tier)", [])]
    if full:
        runs.append(("full tier: make test-full", ["--tier", "full"]))
    for k in range(1, shards + 1):
        runs.append((f"full tier, shard {k}/{shards}", ["--tier", "full", "--splits", str(shards), "--group", str(k)]))
    return runs


def time_pytest_runs(result: dict, runs: Sequence[Sequence[str] | tuple[str, Sequence[str]]], cwd: Path,
                     progress: Callable[[str], None] = lambda line: None,
                     save: Callable[[dict], None] = lambda result: None) -> None:
    """Time each pytest run (after `run`, so its imports are its own) into result["pytest_runs"],
    each with its ratios to the gate's bare cost and to its checks' compute (`parity.bench.checks`):
    cold, on an empty reference cache, unless labelled WARM. A run is a list of arguments or
    (label, arguments)."""
    result["pytest_runs"] = []
    with tempfile.TemporaryDirectory(prefix="parity-bench-cache-") as caches:
        for k, run in enumerate(runs):
            label, args = run if isinstance(run, tuple) else ("", list(run))
            warm = label.endswith(WARM)
            cache = Path(caches) / str(k - 1 if warm else k)
            progress(f"{label or 'pytest'}: pytest {' '.join(args)} ({'warm' if warm else 'cold'}, in a subprocess)")
            # one token: pytest would take a bare existing path for a test path when it looks for its ini file
            timing = pytest_wall([*args, f"--parity-cache-dir={cache}"], cwd, label)
            timing["cache"] = "warm" if warm else "cold"
            for key in ("gate_bare", "gate_checks"):
                cost = result.get(f"{key}_s")
                timing[f"ratio_to_{key}"] = timing["wall_s"] / cost if cost else None
            result["pytest_runs"].append(timing)
            save(result)
