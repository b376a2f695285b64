"""How the plugin hands tests to pytest-xdist workers: each parity case's tests to one worker as
one unit, and, where the reference runs in a process of its own (parity.recorded.remote), the
tests marked `tensorflow` to one more worker kept for them.

Such a test imports TensorFlow into its own process (it checks the TensorFlow model itself, or
Keras). On any other worker it would put TensorFlow beside torch, about 1 GB each; on the kept
worker no test process holds both. The workers tell the controller which tests carry the marker
(it collects none itself) through a file in a folder the controller names in TENSORFLOW_NODEIDS.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

MARKER = "tensorflow"
TENSORFLOW_WORKER = "PARITY_TENSORFLOW_WORKER"  # the id of the worker kept for them (gwN)
TENSORFLOW_NODEIDS = "PARITY_TENSORFLOW_NODEIDS"  # the folder the workers write their ids into


def keep_a_worker_for_tensorflow(config, wanted: bool) -> None:
    """In the xdist controller, before it starts its workers: where `wanted`, one more worker,
    kept for the tests marked `tensorflow` (its id in TENSORFLOW_WORKER, which every worker
    inherits); otherwise none, whatever a session this one runs in kept (the variables are this
    controller's own until it ends)."""
    previous = {name: os.environ.pop(name, None) for name in (TENSORFLOW_WORKER, TENSORFLOW_NODEIDS)}
    folder = None

    def restore():
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if folder:
            shutil.rmtree(folder, ignore_errors=True)

    config.add_cleanup(restore)
    tx = getattr(config.option, "tx", None)
    if wanted and tx:
        tx.append("popen")
        folder = tempfile.mkdtemp(prefix="parity-xdist-")
        os.environ[TENSORFLOW_WORKER] = f"gw{len(tx) - 1}"
        os.environ[TENSORFLOW_NODEIDS] = folder


def kept_workers() -> int:
    """How many of the workers are kept for the marked tests (0 or 1): they do not share the cores."""
    return 1 if os.environ.get(TENSORFLOW_WORKER) else 0


def tell_the_controller(config, items) -> None:
    """In a worker, after collection: the ids of the collected tests marked `tensorflow`."""
    folder = os.environ.get(TENSORFLOW_NODEIDS)
    worker = getattr(config, "workerinput", {}).get("workerid")
    if not folder or not worker:
        return
    marked = [item.nodeid for item in items if item.get_closest_marker(MARKER)]
    tmp = Path(folder, f".{worker}.tmp")
    tmp.write_text(json.dumps(marked))
    os.replace(tmp, Path(folder, f"{worker}.json"))


def marked_nodeids() -> set[str]:
    """What the workers told (they collect the same tests; each tells before it reports its collection)."""
    folder = os.environ.get(TENSORFLOW_NODEIDS)
    found: set[str] = set()
    for path in Path(folder).glob("gw*.json") if folder else ():
        found.update(json.loads(path.read_text()))
    return found


#: the stored test durations (pytest-split's file, written by `make durations`)
DURATIONS = ".test_durations"


def recorded_durations(rootpath) -> dict[str, float]:
    """{nodeid: seconds} from DURATIONS in the rootdir; {} where it is missing or unreadable."""
    try:
        durations = json.loads(Path(rootpath, DURATIONS).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(durations, dict):
        return {}
    return {k: float(v) for k, v in durations.items() if isinstance(v, (int, float))}


def marked_longest_first(units: dict, durations: dict[str, float]) -> dict:
    """`units` ({scope: {nodeid: done}}, xdist's queue) with the marked ones (the kept worker's)
    ordered by their summed recorded durations, longest first (a test never timed counts as the
    mean); the others keep their order. The kept worker's longest unit is the Keras port's, which
    imports torch beside TensorFlow: run first, while the worker holds little else, its peak
    and the TensorFlow tests' after it stay apart (cold `make test` runs, 2 cores: the kept
    worker's largest resident set 1502–1559 MB → 1320–1330 MB)."""
    marked = [s for s in units if s.startswith(f"{MARKER} ")]
    if not durations or not marked:
        return units
    mean = sum(durations.values()) / len(durations)
    cost = {s: sum(durations.get(n, mean) for n in units[s]) for s in marked}
    order = [s for s in units if s not in cost] + sorted(marked, key=lambda s: -cost[s])
    return type(units)((s, units[s]) for s in order)


def case_scheduling(config, log, case_of):
    """xdist's scope scheduling with a parity case's tests as one unit (`case_of(nodeid)`, or
    None for a unit of its own) and the marked tests on the kept worker, longest first
    (`marked_longest_first`), the rest elsewhere."""
    from xdist.scheduler import LoadScopeScheduling

    kept = os.environ.get(TENSORFLOW_WORKER)
    durations = recorded_durations(config.rootpath) if kept else {}

    class CaseScheduling(LoadScopeScheduling):
        _marked: set[str] | None = None
        _ordered = False

        def _split_scope(self, nodeid: str) -> str:
            if kept:
                if self._marked is None:
                    self._marked = marked_nodeids()
                if nodeid in self._marked:
                    return f"{MARKER} {nodeid}"
            case = case_of(nodeid)
            return f"parity case {case}" if case else nodeid  # any other test: a unit of its own

        def _suits(self, node, scope: str) -> bool:
            """The kept worker takes the marked units, the others the rest; a unit whose side has
            no worker left running (xdist shuts down the workers a short run has no unit for)
            goes to any worker."""
            if not kept:
                return True
            wanted = scope.startswith(f"{MARKER} ")
            if (node.gateway.id == kept) == wanted:
                return True
            return not any((n.gateway.id == kept) == wanted for n in self.nodes if not n.shutting_down)

        def _assign_work_unit(self, node) -> None:
            if not self._ordered:  # xdist's queue is complete once the first unit is handed out
                self._ordered, self.workqueue = True, marked_longest_first(self.workqueue, durations)
            scope = next((s for s in self.workqueue if self._suits(node, s)), None)
            if scope is None:
                return
            work_unit = self.workqueue.pop(scope)
            self.assigned_work.setdefault(node, {})[scope] = work_unit
            collection = self.registered_collections[node]
            node.send_runtest_some([collection.index(n) for n, done in work_unit.items() if not done])

        def _reschedule(self, node) -> None:
            if node.shutting_down:
                return
            if not any(self._suits(node, s) for s in self.workqueue):
                node.shutdown()  # nothing left for it: it ends once its own tests are done
                return
            super()._reschedule(node)

    return CaseScheduling(config, log)
