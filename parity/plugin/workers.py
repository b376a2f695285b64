"""How the plugin sets up the processes that run tests under pytest-xdist: each worker's share of
the cores (its frameworks' threads and numpy's BLAS threads), and the C allocator the controller
hands its workers."""

from __future__ import annotations

import functools
import os
from typing import MutableMapping

#: glibc's allocator settings for the test workers. A float64 convolution on the CPU allocates and
#: frees buffers of up to a few hundred MB per call (torch's im2col); by default glibc maps each
#: one afresh and unmaps it when freed, so the kernel zeroes every page again on the next call.
#: With these, buffers up to 64 MiB come from the heap and stay there for the next call (given back
#: once 1 GiB lies free at its top); larger ones are still mapped, so they do not fragment it.
#: 64 MiB, not 512 MiB as first measured, since the built-in torch port convolves float64 batches
#: one sample at a time (models_torch.network.convolve_per_sample): its buffers fit under 64 MiB,
#: and a port's whole-batch buffers of 150 MB and more, kept in the heap, grew it by their size at
#: each forward. Measured on 2 cores, cold, two runs each: `make test` 104.0 and 105.6 s, kernel
#: CPU 16.7 and 14.7 s, largest process 1397 and 1345 MB with 64 MiB against 106.1 and 109.9 s,
#: 22.7 and 23.3 s, 1675 and 1561 MB with 512 MiB; the gate 46.0 and 46.0 s against 49.1 and 49.3 s.
#: Other C libraries ignore the names.
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def is_xdist_controller(config) -> bool:
    """The controller of `-n N` runs no test; its workers do (and check the device themselves)."""
    return getattr(config.option, "numprocesses", None) not in (None, 0) and not hasattr(config, "workerinput")


def share_cores_between_workers(config) -> None:
    """Under pytest-xdist, each worker gives both frameworks its share of the cores, so N workers
    do not run N × cores threads each (measured on 2 cores: the training tests took 127 s under
    `-n 2` with every framework on all cores, 74 s with one thread each, 87 s serially).
    TensorFlow reads its variables when its runtime starts, after this; torch reads
    PARITY_NUM_THREADS when a model is configured, and so does any process a test starts, which
    keeps the fresh-process checkpoint tests bit for bit. numpy's BLAS is already loaded here: its
    share comes from the controller (`share_blas_threads_with_workers`)."""
    from parity.plugin.scheduling import kept_workers

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0) - kept_workers()
    if not hasattr(config, "workerinput") or workers < 2:
        return
    share = core_share(workers)
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", share)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    os.environ.setdefault("PARITY_NUM_THREADS", share)


def core_share(workers: int) -> str:
    """Each of `workers` processes' share of this machine's cores (at least one), as a variable's value."""
    return str(max(1, (os.cpu_count() or 1) // workers))


def worker_count(config) -> int:
    """How many workers the xdist controller starts (after xdist resolved `-n auto`)."""
    return len(getattr(config.option, "tx", None) or []) or int(config.option.numprocesses or 0)


def share_blas_threads_with_workers(config) -> None:
    """In the xdist controller, before it starts its workers: numpy's OpenBLAS gets each worker's
    share of the cores (OPENBLAS_NUM_THREADS), unless the user set it. OpenBLAS reads it when numpy
    is imported, so every worker, and every process a test starts in one, gets it (a subprocess
    sums in its parent's order); the controller, whose numpy is loaded, keeps its own. After each
    call OpenBLAS's threads spin a while for the next one, so on 2 cores under `-n 2` each worker's
    second BLAS thread took CPU from the other worker: a cold `make test` spent 252 s of user CPU
    in 128.8 s, and 229 s in 122.1 s with one BLAS thread per worker."""
    workers = worker_count(config) if is_xdist_controller(config) else 0
    if workers >= 2:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", core_share(workers))


def tune_allocator(environ: MutableMapping[str, str]) -> bool:
    """ALLOCATOR_ENV into `environ`, for the processes started with it, unless the user set either
    name (their choice stands). glibc reads them when a process starts: the process that sets
    them keeps its own allocator. True where they were added."""
    if any(name in environ for name in ALLOCATOR_ENV):
        return False
    environ.update(ALLOCATOR_ENV)
    return True


def tune_allocator_for_workers(config) -> None:
    """In the xdist controller, before it starts its workers (xdist starts them when the session
    starts, after every plugin's pytest_configure): the workers, and every process a test starts
    in them, get ALLOCATOR_ENV. `-n 0` runs in this process, which keeps the allocator it has."""
    if is_xdist_controller(config):
        tune_allocator(os.environ)


#: Between tests, a worker whose resident set is above this hands the heap its tests freed back to
#: the system (`hand_back_freed_heap`): a torch worker holds ≈ 400–700 MB of its own between tests.
TRIM_ABOVE_MB = 512


def hand_back_freed_heap() -> bool:
    """After a test, in a process whose environment holds ALLOCATOR_ENV (an xdist worker, a process
    a test started in one, and the controller, which set them for its workers and never grows
    near the bound): where glibc is the C library and the resident set is above TRIM_ABOVE_MB,
    malloc_trim(0). Those settings let up to 1 GiB of freed heap stay mapped, and what a test's
    float64 convolutions and gradients freed in the middle of the heap stays there whatever the
    setting: each worker of a cold `make test` grew from test to test, to 1.9 and 2.2 GB (2 cores).
    The next test faults its pages in again. Measured on 2 cores, two cold `make test` each way:
    largest process 1.62 and 1.91 GB → 1.58 and 1.57 GB (the kept TensorFlow worker; the others
    1.23–1.57 GB), kernel time 14–15 s → 24–26 s, wall 99.8 s → 103.8–105.4 s. Trimming only the
    top 256 MiB kept the cost and lost the gain. True where it trimmed."""
    if any(os.environ.get(name) != value for name, value in ALLOCATOR_ENV.items()):
        return False
    libc = _glibc()
    if libc is None or resident_mb() < TRIM_ABOVE_MB:
        return False
    libc.malloc_trim(0)
    return True


def resident_mb() -> float:
    """This process's resident set now, in MB (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return 0.0


@functools.lru_cache(maxsize=1)
def _glibc():
    """glibc, loaded (None under another C library: musl, macOS, Windows)."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None
