"""A pytest plugin `parity bench` loads into the runs it times (`-p parity.bench.probe`): each test
process (the main one and every xdist worker, which get the same `-p`) writes, when it ends, its
own peak resident set size and CPU time, and the main process the moments of the first test result and of the
first test that ran (not skipped), as one
JSON file into the folder named by PARITY_BENCH_PROBE. Without that variable it does nothing.

Read by `parity.bench.tiers.pytest_wall`. numpy-free, framework-free: it must not change what it measures.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

ENV = "PARITY_BENCH_PROBE"
_FIRST: list[float] = []  # wall-clock time of this process's first test report (a skip counts)
_FIRST_RUN: list[float] = []  # ... and of the first test that ran (its call passed or failed)


def peak_rss_mb_of_this_process() -> float:
    """VmHWM: the high-water mark of this process's own memory since exec (−1 where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            kb = next((line.split()[1] for line in status if line.startswith("VmHWM:")), None)
    except OSError:
        kb = None
    return int(kb) / 1e3 if kb is not None else -1.0


def pytest_runtest_logreport(report):
    # the main process sees every report (under xdist the workers' too): the first is the first result
    if not _FIRST:
        _FIRST.append(time.time())
    if not _FIRST_RUN and report.when == "call":
        _FIRST_RUN.append(time.time())


def pytest_unconfigure(config):
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    write_record(worker, _FIRST[0] if _FIRST and worker == "main" else None,
                 _FIRST_RUN[0] if _FIRST_RUN and worker == "main" else None)


def write_record(process: str, first_result_at=None, first_run_at=None) -> None:
    """This process's record (its peak RSS, and the main process's moments) into the folder
    PARITY_BENCH_PROBE names; nothing without it. Also called by a backend's own process
    (parity.recorded.server), which is no pytest process."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    times = os.times()  # this process's own CPU, its children's apart (a reference's process writes its own)
    record = {"process": process, "pid": os.getpid(), "peak_rss_mb": peak_rss_mb_of_this_process(),
              "cpu_user_s": round(times.user, 2), "cpu_system_s": round(times.system, 2),
              "first_result_at": first_result_at, "first_run_at": first_run_at}
    Path(folder, f"{process}-{os.getpid()}.json").write_text(json.dumps(record))
