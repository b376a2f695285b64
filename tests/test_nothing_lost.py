"""Bad inputs and faults, table-driven: each probe is the command, the one line it prints, its exit
code, and the proof that nothing outside the folder it was given to write changed (sha256 of every
file under the test's folder and under the shipped fixtures, before and after). No probe may
delete or change a file the harness did not make."""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

import numpy as np
import pytest

from parity import backends
from parity.cli import main
from parity.files import MANIFEST, RunFolder
from parity.resources import FIXTURES_ROOT

QUICK = ["--ref", "numpy", "--candidate", "torch", "--case", "gs1", "--dtype", "float64", "--no-figures"]


def snapshot(root: Path, skip: Optional[Path] = None) -> dict[str, str]:
    """sha256 of every file under `root` (links by their target's name), but `skip` and what lies under it."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None and Path(dirpath).resolve() == skip.resolve():
            dirnames[:] = []
            continue
        for name in filenames:
            path = Path(dirpath, name)
            if skip is not None and path.resolve() == skip.resolve():
                continue
            if path.name.endswith(".obtained.json"):  # the plugin's leftovers from other tests
                continue
            data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
            out[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


# -- what the probes build ------------------------------------------------------------------------

def _users_files(folder: Path) -> None:
    (folder / "gs1").mkdir(parents=True, exist_ok=True)
    (folder / "gs1" / "notes.txt").write_text("my notes, not the harness's\n")
    (folder / "thesis.tex").write_text("\\documentclass{article}\n")


@functools.lru_cache(maxsize=1)
def _small_scan() -> dict:
    """A valid 16-point scan (the fixture generator's), simulated once for every probe."""
    from parity.inputs.fixture import FixtureSpec, simulate

    return simulate(FixtureSpec(rows=4, cols=4, seed=7))


def _scan(tmp: Path, name: str = "scan.npz", **change) -> Path:
    arrays = dict(_small_scan(), **change)
    path = tmp / name
    np.savez(path, **arrays)
    return path


def _npz_with_header(tmp: Path, key: str, shape: tuple, name: str = "lying.npz") -> Path:
    """A valid scan whose `key` member's NPY header claims `shape` (the bytes stay as they were)."""
    arrays = _small_scan()
    path = tmp / name
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in arrays.items():
            buf = io.BytesIO()
            if k == key:
                header = {"descr": np.lib.format.dtype_to_descr(v.dtype), "fortran_order": False, "shape": shape}
                np.lib.format.write_array_header_1_0(buf, header)
                buf.write(np.ascontiguousarray(v).tobytes())
            else:
                np.lib.format.write_array(buf, v)
            zf.writestr(f"{k}.npy", buf.getvalue())
    return path


def _probe_npz(tmp: Path, probe) -> Path:
    path = tmp / "probe.npz"
    np.savez(path, probeGuess=probe)
    return path


def _goldens(tmp: Path, edit: Callable[[dict], None], raw: Optional[Callable[[str], str]] = None) -> Path:
    """A copy of gs1's golden in tmp/g, edited."""
    folder = tmp / "g"
    folder.mkdir()
    golden = json.loads((FIXTURES_ROOT / "goldens" / "gs1.json").read_text())
    edit(golden)
    text = json.dumps(golden, indent=1)
    (folder / "gs1.json").write_text(raw(text) if raw else text)
    return folder


def _set(path: str, value):
    def edit(golden: dict) -> None:
        *parents, last = path.split(".")
        node = golden
        for p in parents:
            node = node[p]
        node[last] = value
    return edit


_HELD: list[RunFolder] = []  # a run folder held open by a probe, as a second `parity check` would


def _held(tmp: Path) -> list[str]:
    _HELD.append(RunFolder(tmp / "out", "parity check").open())
    return ["check", *QUICK, "--out", "out"]


def _exiting_entry_point(monkeypatch) -> dict:
    calls = {"n": 0}

    def load():
        calls["n"] += 1
        raise SystemExit(3)  # a third-party package that calls sys.exit at import

    eps = [SimpleNamespace(name="theirs", value="theirpkg:backend", load=load)]
    monkeypatch.setattr(backends, "_entry_points", lambda: eps)
    monkeypatch.setattr(backends, "_DISCOVERED", {})
    monkeypatch.setattr(backends, "_BROKEN", {})
    monkeypatch.setattr(backends, "_SCANNED", False)
    return calls


def _full_disk(monkeypatch) -> None:
    import parity.cli as cli

    def full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cli, "_cmd_cases", full)


# -- the table --------------------------------------------------------------------------------------

@dataclass
class Probe:
    id: str
    setup: Callable  # (tmp) -> argv, or (tmp, monkeypatch) -> argv
    line: Optional[str]  # what the one line on stderr says (a regex); None: nothing on stderr
    code: int
    writes: Optional[str] = None  # the folder (under tmp) the command may write; nothing else may change
    out: Optional[str] = None  # a regex the standard output must match
    full: bool = False  # a second run of a kind the gate already has: the full tier's

    def argv(self, tmp: Path, monkeypatch) -> list[str]:
        try:
            return self.setup(tmp, monkeypatch)
        except TypeError:
            return self.setup(tmp)


PROBES = [
    # 1. the output folder: only what parity made is ever removed
    Probe("check --out DIR holding the user's files",
          lambda t: (_users_files(t / "out"), ["check", *QUICK, "--out", "out"])[1],
          r"^parity: error: out: --out holds files parity did not write \(gs1, thesis.tex\); .*--force", 2),
    Probe("check --out '' (the current folder)",
          lambda t: (_users_files(t), ["check", *QUICK, "--out", ""])[1],
          r"^parity: error: \.: --out holds files parity did not write", 2),
    Probe("check --out HOME",
          lambda t: (_users_files(t / "home"), (t / "home" / ".profile").write_text("x\n"),
                     ["check", *QUICK, "--out", str(t / "home")])[2],
          r"home: --out holds files parity did not write \(.profile, gs1, thesis.tex\)", 2),
    Probe("check --out FILE",
          lambda t: ((t / "report.txt").write_text("mine\n"), ["check", *QUICK, "--out", "report.txt"])[1],
          r"^parity: error: report.txt: --out must be a folder, and this is a file$", 2),
    Probe("check on an --out another check is writing", _held,
          r"^parity: error: .*out: another parity run is writing to this folder \(pid \d+\); wait for it", 2),
    # 2. the shipped fixture is written only by its own command, never by --probe
    Probe("make-fixture --probe without --out",
          lambda t: ["make-fixture", "--probe", str(_probe_npz(t, np.ones((64, 64), np.complex64)))],
          r"^parity: error: --probe .*probe.npz: .* never replaces the shipped .*fly001_small.npz; .*--out FILE.npz$", 2),
    Probe("make-fixture --probe of strings",
          lambda t: ["make-fixture", "--probe", str(_probe_npz(t, np.full((64, 64), "x"))), "--out", "f.npz"],
          r"^parity: error: .*probe.npz: key 'probeGuess': must be numeric \(complex\), got dtype <U1$", 2),
    Probe("make-fixture --probe all zeros",
          lambda t: ["make-fixture", "--probe", str(_probe_npz(t, np.zeros((64, 64), np.complex64))), "--out", "f.npz"],
          r"^parity: error: .*probe.npz: key 'probeGuess': is all zeros$", 2),
    Probe("make-fixture --probe with NaN",
          lambda t: ["make-fixture", "--probe", str(_probe_npz(t, np.full((64, 64), np.nan, np.complex64))),
                     "--out", "f.npz"],
          r"^parity: error: .*probe.npz: key 'probeGuess': has 4096 NaN/Inf values", 2),
    Probe("make-fixture --probe that is no zip",
          lambda t: ((t / "probe.npz").write_bytes(b"\x80\x04 not a zip at all"),
                     ["make-fixture", "--probe", str(t / "probe.npz"), "--out", "f.npz"])[1],
          r"^parity: error: .*probe.npz: not an NPZ file \(no zip archive inside\)$", 2),
    # 3, 4. goldens: non-finite values and a provenance that is no object name the file and the key
    Probe("check with a golden value Infinity",
          lambda t: ["check", *QUICK, "--out", "out", "--goldens",
                     str(_goldens(t, _set("summaries.canvas.amplitude.max", float("inf"))))],
          r"^parity: error: .*g/gs1.json: key 'summaries.canvas.amplitude.max' is Infinity: golden values must be "
          r"finite", 2, writes="out", out=r"gs1 +float64 .* BAD INPUT"),
    Probe("check with a golden value NaN",
          lambda t: ["check", *QUICK, "--out", "out", "--goldens",
                     str(_goldens(t, _set("summaries.patch_stats.global_mean", float("nan"))))],
          r"key 'summaries.patch_stats.global_mean' is NaN: golden values must be finite", 2, writes="out", full=True),
    Probe("check with a golden value 1e999 (Infinity written as a number)",
          lambda t: ["check", *QUICK, "--out", "out", "--goldens",
                     str(_goldens(t, _set("summaries.canvas.amplitude.max", 12345.5),
                                  raw=lambda s: s.replace("12345.5", "1e999")))],
          r"key 'summaries.canvas.amplitude.max' is Infinity", 2, writes="out", full=True),
    Probe("check with a golden whose provenance is null",
          lambda t: ["check", *QUICK, "--out", "out", "--goldens", str(_goldens(t, _set("provenance", None)))],
          r"g/gs1.json: key 'provenance' must be an object, got null", 2, writes="out", full=True),
    Probe("refresh --new on a golden whose provenance is a string",
          lambda t: ["refresh", "--new", "--case", "gs1", "--goldens", str(_goldens(t, _set("provenance", "me")))],
          None, 0, out=r"gs1: corrupt — kept .*g/gs1.json\n  \(.*g/gs1.json: key 'provenance' must be an object, "
                       r"got str"),
    Probe("check --goldens DIR that does not exist",
          lambda t: ["check", *QUICK, "--out", "out", "--goldens", "goldnes"],
          r"^parity: error: --goldens goldnes: no such folder", 2),
    # 5. inputs that passed the loader and failed later
    Probe("check --data with too few points",
          lambda t: ["check", *QUICK, "--out", "out", "--data",
                     str(_scan(t, **{k: v[:5] for k, v in _five().items()}))],
          r"^parity: error: .*scan.npz: key 'diffraction': case gs1: scan has 5 points, needs at least 8", 2),
    Probe("check --data with all-zero diffraction",
          lambda t: ["check", *QUICK, "--out", "out", "--data",
                     str(_scan(t, diffraction=np.zeros((16, 64, 64), np.float32)))],
          r"^parity: error: .*scan.npz: key 'diffraction': is all zeros", 2),
    Probe("check --data whose NPY header claims a huge shape",
          lambda t: ["check", *QUICK, "--out", "out", "--data", str(_npz_with_header(t, "xcoords", (10 ** 12,)))],
          r"^parity: error: .*lying.npz: key 'xcoords': its header claims shape \(1000000000000,\) of float64 "
          r"\(8000000000000 bytes\) but the file holds 128 bytes for it$", 2),
    Probe("check --data holding pickled objects",
          lambda t: ["check", *QUICK, "--out", "out", "--data",
                     str(_scan(t, xcoords=np.array([object()] * 16, dtype=object)))],
          r"key 'xcoords': holds Python objects \(dtype object\), i.e. pickled data, which parity never loads", 2),
    # 6. outputs named by the user
    Probe("check --summary-md in a folder that does not exist",
          lambda t: ["check", *QUICK, "--out", "out", "--summary-md", "no/such/folder/summary.md"],
          r"^parity: error: --summary-md no/such/folder/summary.md: its folder does not exist$", 2),
    Probe("bench --out a file bench did not write",
          lambda t: ((t / "notes.json").write_text("[1, 2]\n"), ["bench", "--no-pytest", "--out", "notes.json"])[1],
          r"^parity: error: --out notes.json: holds a file parity bench did not write; name another file$", 2),
    Probe("an OSError without a file (a full disk)",
          lambda t, mp: (_full_disk(mp), ["cases"])[1],
          r"^parity: error: No space left on device$", 2),
    # 7. a third-party backend that calls sys.exit at import
    Probe("backends with an entry point that calls sys.exit",
          lambda t, mp: (_exiting_entry_point(mp), ["backends"])[1],
          None, 0, out=r"theirs +cannot be used here: theirpkg:backend cannot be loaded: SystemExit: 3"),
    Probe("check --candidate of an entry point that calls sys.exit",
          lambda t, mp: (_exiting_entry_point(mp), ["check", *QUICK, "--candidate", "theirs", "--out", "out"])[1],
          r"^parity: error: backend 'theirs': theirpkg:backend cannot be loaded: SystemExit: 3$", 2),
    # 8. nothing silently skipped or doubled
    Probe("check with a repeated --case",
          lambda t: ["check", *QUICK, "--case", "gs1", "--out", "out"],
          None, 0, writes="out", out=r"1 case\(s\) x 1 dtype\(s\)(.|\n)*1/1 runs agree"),
]


def _five() -> dict:
    return {k: v for k, v in _small_scan().items() if k in ("diffraction", "xcoords", "ycoords", "scan_index")}


@pytest.mark.parametrize("probe", [pytest.param(p, id=p.id, marks=[pytest.mark.full] if p.full else [])
                                   for p in PROBES])
def test_probe(probe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        argv = probe.argv(tmp_path, monkeypatch)
        writes = tmp_path / probe.writes if probe.writes else None
        before, shipped = snapshot(tmp_path, skip=writes), snapshot(FIXTURES_ROOT)
        code = main(argv, reuse=("numpy", "torch"))
        captured = capsys.readouterr()
        after, shipped_after = snapshot(tmp_path, skip=writes), snapshot(FIXTURES_ROOT)
    finally:
        while _HELD:  # the other run ends after the command (its manifest then changes, as it should)
            _HELD.pop().close("complete")
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert "Traceback" not in captured.err + captured.out
    assert code == probe.code, captured.err + captured.out
    if probe.line is None:
        assert lines == []
    else:
        assert len(lines) == 1, lines
        assert re.search(probe.line, lines[0]), lines[0]
    if probe.out:
        assert re.search(probe.out, captured.out), captured.out
    assert after == before, "a file outside the run folder changed"
    assert shipped_after == shipped, "a shipped fixture, golden or tolerance file changed"


def test_a_broken_entry_point_is_loaded_once(monkeypatch):
    calls = _exiting_entry_point(monkeypatch)
    for _ in range(3):
        with pytest.raises(backends.BackendError, match="SystemExit: 3"):
            backends.get_backend("theirs")
    assert backends.broken() == {"theirs": "theirpkg:backend cannot be loaded: SystemExit: 3"}
    assert calls["n"] == 1


def test_a_rerun_removes_only_what_the_last_run_wrote(tmp_path, monkeypatch, capsys):
    """The first defect as the user met it: a file of theirs in out/gs1/ survives the next run,
    and so does a file beside the report; the previous run's own files are replaced."""
    monkeypatch.chdir(tmp_path)
    assert main(["check", *QUICK, "--out", "out"], reuse=("numpy", "torch")) == 0
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["state"] == "complete" and "gs1/stats.json" in manifest["files"]
    (tmp_path / "out" / "gs1" / "notes.txt").write_text("mine\n")
    (tmp_path / "out" / "gs1" / "extra").mkdir()
    (tmp_path / "out" / "gs1" / "extra" / "plot.png").write_bytes(b"png")
    stale = tmp_path / "out" / "gs1" / "stats.json"
    stale.write_text("{}")  # the harness's own file: replaced by the rerun
    assert main(["check", *QUICK, "--out", "out"], reuse=("numpy", "torch")) == 0
    assert (tmp_path / "out" / "gs1" / "notes.txt").read_text() == "mine\n"
    assert (tmp_path / "out" / "gs1" / "extra" / "plot.png").read_bytes() == b"png"
    assert "float64" in json.loads(stale.read_text())
    files = json.loads((tmp_path / "out" / MANIFEST).read_text())["files"]
    assert "gs1/notes.txt" not in files and "gs1/extra/plot.png" not in files
    capsys.readouterr()


def test_force_writes_beside_the_users_files_and_keeps_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _users_files(tmp_path / "out")
    before = snapshot(tmp_path / "out")
    assert main(["check", *QUICK, "--out", "out", "--force"], reuse=("numpy", "torch")) == 0
    after = snapshot(tmp_path / "out")
    assert {k: after[k] for k in before} == before
    assert "report.md" in after and (tmp_path / "out" / MANIFEST).exists()
    # the next run may write there without --force (the manifest is there) and still keeps them
    assert main(["check", *QUICK, "--out", "out"], reuse=("numpy", "torch")) == 0
    assert {k: snapshot(tmp_path / "out")[k] for k in before} == before
    capsys.readouterr()


def test_a_manifest_never_reaches_outside_its_folder(tmp_path):
    """A manifest edited to list a path above the folder (or through a link) removes nothing there."""
    outside = tmp_path / "precious.txt"
    outside.write_text("keep\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(outside)
    (out / MANIFEST).write_text(json.dumps({"tool": "ptycho-parity", "files": ["../precious.txt", "link",
                                                                                str(outside)]}))
    RunFolder(out, "parity check").open().close("complete")
    assert outside.read_text() == "keep\n" and (out / "link").is_symlink()


def test_an_interrupted_run_leaves_no_previous_pass(tmp_path, monkeypatch, capsys):
    """After a passing run, a run interrupted at its second case says it is unfinished: the
    previous PASS is gone from report.md and summary.json, and summary.json does not read passed."""
    import parity.run.engine as engine

    monkeypatch.chdir(tmp_path)
    assert main(["check", *QUICK, "--out", "out"], reuse=("numpy", "torch")) == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["passed"] is True
    real, calls = engine.run_case, []

    def interrupted(case, request):
        calls.append(case.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(case, request)

    monkeypatch.setattr(engine, "run_case", interrupted)
    code = main(["check", *QUICK, "--case", "gs2-big", "--out", "out"], reuse=("numpy", "torch"))
    assert code == 130 and calls == ["gs1", "gs2-big"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["state"] == "interrupted" and summary["passed"] is False
    assert (summary["runs_done"], summary["runs_planned"]) == (1, 2)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "**Interrupted run**: 1 of 2 runs done" in report
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["state"] == "interrupted"
    assert capsys.readouterr().err.strip().splitlines() == ["parity: interrupted"]


@pytest.mark.full
def test_a_corrupt_golden_is_its_cases_error_and_the_other_cases_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    goldens = _goldens(tmp_path, _set("summaries.canvas.amplitude.max", float("inf")))
    (goldens / "gs2-big.json").write_text((FIXTURES_ROOT / "goldens" / "gs2-big.json").read_text())
    code = main(["check", *QUICK, "--case", "gs2-big", "--out", "out", "--goldens", str(goldens)],
                reuse=("numpy", "torch"))
    out = capsys.readouterr().out
    assert code == 2
    assert re.search(r"gs1 +float64 .* BAD INPUT", out) and re.search(r"gs2-big +float64 .* PASS", out)
    assert re.search(r"error +golden numpy: .*gs1.json: key 'summaries.canvas.amplitude.max' is Infinity", out)


def test_the_report_of_a_running_check_says_it_is_unfinished(tmp_path):
    from parity.report.markdown import write_report

    write_report([], tmp_path, {}, state="running", planned=8)
    assert "**Unfinished run**: 0 of 8 runs done so far" in (tmp_path / "report.md").read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["state"] == "running" and summary["passed"] is False


def test_a_table_where_a_number_stands_is_one_line(tmp_path):
    from parity.goldens.store import load_golden_profile
    from parity.run.tolerances import ToleranceError, load_profile

    bad = tmp_path / "tolerances.toml"
    bad.write_text("agreement = 3\ngolden = { cpu = 1 }\n")
    with pytest.raises(ToleranceError, match=r"tolerances.toml: key 'agreement' must be a table, got 3$"):
        load_profile("cpu", "float64", path=bad)
    with pytest.raises(ToleranceError, match=r"tolerances.toml: key 'golden.cpu' must be a table, got 1$"):
        load_golden_profile("cpu", "float64", path=bad)


def test_bench_keeps_what_it_measured_when_interrupted(tmp_path, monkeypatch):
    """`parity bench --out` into a folder that does not exist yet; interrupted in the harness
    timings, the file holds the imports and the backends measured before, marked partial."""
    from parity.bench import measure as bench, results as bench_results

    monkeypatch.setattr(bench, "import_times", lambda: {"numpy": 0.1})
    monkeypatch.setattr(bench, "backend_times", lambda *a: [{"case": "gs1"}])
    monkeypatch.setattr(bench, "extended_times", lambda *a: [])

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "harness_times", interrupted)
    out = tmp_path / "new" / "folder" / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        bench.run(["gs1"], 1, save=lambda result: bench_results.write(result, out))
    kept = json.loads(out.read_text())
    assert kept["state"] == "partial" and kept["imports_s"] == {"numpy": 0.1} and kept["backends"] == [{"case": "gs1"}]
    with pytest.raises(ValueError, match="key 'state' is 'partial': an unfinished bench"):
        bench_results.load(out)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write into an open file raises it: no file name


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, monkeypatch, capsys):
    """ENOSPC from a write names no file: the run folder's lock and every atomic write say which
    file, in one line, exit 2, and the atomic write leaves no temporary file behind."""
    import parity.files as files

    def full_disk_os(**failing):  # parity.files' own `os`, nobody else's (xdist's channel writes too)
        return SimpleNamespace(**{**vars(os), **dict.fromkeys(failing, _disk_full)})

    monkeypatch.setattr(files, "os", full_disk_os(write=True))
    assert main(["check", *QUICK, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"parity: error: {tmp_path / 'out' / '.parity-run.lock'}: {os.strerror(errno.ENOSPC)}"]
    monkeypatch.setattr(files, "os", full_disk_os(fsync=True))
    with pytest.raises(OSError) as raised:
        files.write_atomic(tmp_path / "f" / "x.json", "{}")
    assert raised.value.filename == str(tmp_path / "f" / "x.json") and raised.value.errno == errno.ENOSPC
    assert list((tmp_path / "f").iterdir()) == []


def test_a_figure_that_cannot_be_written_is_said_on_the_console_too(tmp_path, monkeypatch, capsys):
    from parity.report import figures

    def full(result, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(figures, "FIGURES", {"canvas": full})  # the one figure asked for, and it fails
    drawing = [a for a in QUICK if a != "--no-figures"]
    assert main(["check", *drawing, "--out", str(tmp_path / "out")], reuse=("numpy", "torch")) == 0
    line = (f"      figure canvas_float64.png could not be drawn: OSError: [Errno {errno.ENOSPC}] "
            f"{os.strerror(errno.ENOSPC)}: '{tmp_path / 'out' / 'gs1' / 'canvas_float64.png'}'")
    assert line in capsys.readouterr().out.splitlines()
