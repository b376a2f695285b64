"""`parity bench`: one run writes the table and bench.json; --compare prints ratios; bad input is
one line. The figures themselves are measurements, never asserted."""

import json
from pathlib import Path

import pytest

from parity.backends import BUILTIN
from parity.bench import measure as bench, tiers as bench_tiers
from parity.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.full
def test_bench_writes_every_figure_and_compares(tmp_path, capsys):
    out, old = tmp_path / "bench.json", tmp_path / "old.json"
    # an earlier result holding a few of the figures, each 1.0: --compare prints new/old for those
    old.write_text(json.dumps({"schema": bench.SCHEMA, "imports_s": {"torch": 1.0}, "harness": [],
                               "backends": [{"backend": "tensorflow", "case": "gs1", "dtype": "float64",
                                             "build_s": 1.0, "forward_s": 1.0, "gradient_s": 1.0,
                                             "adam_step_s": 1.0}],
                               "bare_forward_s": 1.0, "bare_with_training_s": 1.0, "peak_rss_mb": 1.0}))
    assert main(["bench", "--case", "gs1", "--repeat", "1", "--no-pytest", "--out", str(out),
                 "--compare", str(old)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert set(result["imports_s"]) == {"tensorflow", "torch"}
    assert {(r["backend"], r["dtype"]) for r in result["backends"]} == {
        (b, d) for b in ("tensorflow", "torch") for d in ("float32", "float64")}
    for r in result["backends"]:
        assert all(r[k] > 0 for k in ("build_s", "forward_s", "infer_s", "gradient_s", "adam_step_s")), r
    assert set(result["harness"][0]) == {"case", "summaries_s", "comparison_s", "arbitration_s", "checkpoints_s",
                                         "dump_s", "golden_s"}
    assert result["bare_with_training_s"] > result["bare_forward_s"] > sum(result["imports_s"].values())
    assert result["peak_rss_mb"] > 100 and "bare cost" in printed and "gs1" in printed
    assert result["gate_bare_s"] is None and "gate_checks_s" not in result  # gs1 alone: not the gate's cases
    ratios = printed[printed.index("new/old"):].splitlines()
    forward = next(line for line in ratios if line.startswith("tensorflow gs1 float64 forward"))
    row = next(r for r in result["backends"] if (r["backend"], r["dtype"]) == ("tensorflow", "float64"))
    assert float(forward.split()[-1]) == pytest.approx(row["forward_s"], abs=0.006)  # new / 1.0, printed %.2f
    assert not any(line.startswith("tensorflow gs1 float32") for line in ratios)  # only what both hold


def test_the_console_bench_starts_again_under_the_workers_allocator(monkeypatch):
    """Its bare cost is measured as the gate's workers compute (parity.plugin.workers); the
    allocator a process has is fixed when it starts, so the command starts itself again."""
    from parity.plugin.workers import ALLOCATOR_ENV

    started = []
    monkeypatch.setattr(bench.os, "execve", lambda path, argv, env: started.append((argv, env)))
    monkeypatch.setattr(bench.sys, "argv", ["parity", "bench", "--no-pytest"])
    for name in ALLOCATOR_ENV:
        monkeypatch.delenv(name, raising=False)
    bench.restart_under_the_workers_allocator()
    (argv, env), = started
    assert argv[1:] == ["-m", "parity", "bench", "--no-pytest"] and {k: env[k] for k in ALLOCATOR_ENV} == ALLOCATOR_ENV
    assert bench.allocator() == {name: None for name in ALLOCATOR_ENV}
    for name, value in ALLOCATOR_ENV.items():  # started with them (or the user's own): measured as it is
        monkeypatch.setenv(name, value)
    bench.restart_under_the_workers_allocator()
    assert len(started) == 1 and bench.allocator() == ALLOCATOR_ENV


@pytest.mark.parametrize("workers", ["0", "2"])
def test_bench_times_pytest_cold_in_a_subprocess(workers):
    timing = bench_tiers.pytest_wall(["-n", workers, "tests/test_config.py", "-k", "defaults"], ROOT, "config")
    assert timing["returncode"] == 0 and "1 passed" in timing["summary"], timing
    assert timing["label"] == "config" and timing["command"].startswith("pytest -n")
    # one record per test process: the main one, and each worker under -n 2, with the worker kept
    # for the tests marked tensorflow where the TensorFlow reference runs apart (it is installed)
    kept = {"gw2"} if BUILTIN["tensorflow"].missing() is None else set()
    expected = {"main"} if workers == "0" else {"main", "gw0", "gw1"} | kept
    assert set(timing["peak_rss_mb_by_process"]) == expected
    # each process's own high-water mark (measured ≈ 50 MB: this run imports no framework), not
    # the size of the process that started it, which fork would carry into ru_maxrss
    assert all(10 < mb < 300 for mb in timing["peak_rss_mb_by_process"].values()), timing
    assert timing["peak_rss_mb_max"] == max(timing["peak_rss_mb_by_process"].values())
    # each process's own CPU seconds: a pytest start costs some (measured ≈ 1–2 s), none costs more than the wall
    assert set(timing["cpu_s_by_process"]) == expected, timing
    assert all(0 < s < timing["wall_s"] for s in timing["cpu_s_by_process"].values()), timing
    assert timing["cpu_s"] == pytest.approx(sum(timing["cpu_s_by_process"].values()))
    assert 0 < timing["first_result_s"] <= timing["first_run_s"] < timing["wall_s"]


def test_the_bare_costs_the_bench_computes():
    """The bench's own arithmetic on made-up timings (every build 1 s, forward 2 s, gradient 4 s,
    Adam step 8 s, imports 3 s), worked out by hand: the default suite's bare cost is imports plus
    one build and forward per backend x case x dtype; with training, one gradient per dtype and
    TRAIN_STEPS Adam steps in float64; the gate's adds its GATE_TRAIN_STEPS steps on its case and
    one cold forward of each extended case (16 s each here)."""
    from parity.inputs.cases import case_names

    default, extended = case_names("default"), case_names("extended")
    rows = [{"case": c, "dtype": d, "backend": b, "build_s": 1.0, "forward_s": 2.0, "gradient_s": 4.0,
             "adam_step_s": 8.0} for c in default for d in ("float32", "float64") for b in ("tensorflow", "torch")]
    imports = {"tensorflow": 2.0, "torch": 1.0}
    runs = len(default) * 2 * 2  # case x dtype x backend
    assert bench.bare_cost(imports, rows, default, training=False) == 3 + runs * 3
    assert bench.bare_cost(imports, rows, default, training=True) == 3 + runs * (3 + 4) + runs // 2 * bench.TRAIN_STEPS * 8
    assert bench.bare_cost(imports, rows, default[:1], training=False) == 3 + 4 * 3  # only the cases asked for
    ext = [{"case": c, "backend": b, "build_s": 6.0, "forward_s": 10.0} for c in extended for b in ("tensorflow",)]
    gate = 3 + runs * (3 + 4) + 2 * bench.GATE_TRAIN_STEPS * 8 + len(extended) * 16  # 2: both backends' float64
    assert bench.gate_bare_cost(imports, rows, ext) == gate
    assert bench.gate_bare_cost(imports, rows, ext[1:]) is None  # an extended case not timed: no figure
    # the gate's checks' compute: the bare cost, each default row's inference forward (5 s), numpy's
    # build and forward per default case (1 + 2 s), its checkpoint checks (7 s), the faults (0.5 s each)
    from parity.bench.checks import gate_checks_cost

    result = {"gate_bare_s": gate, "backends": [dict(r, infer_s=5.0) for r in rows],
              "oracle": [{"case": c, "build_s": 1.0, "forward_s": 2.0} for c in default],
              "harness": [{"case": c, "checkpoints_s": 7.0} for c in default],
              "faults": [{"fault": f"f{k}", "seconds": 0.5} for k in range(18)]}
    assert gate_checks_cost(result) == gate + runs * 5 + len(default) * (3 + 7) + 9
    for part in ("oracle", "harness", "faults"):  # a part not measured: no figure
        assert gate_checks_cost(dict(result, **{part: result[part][1:] if part != "faults" else []})) is None
    assert gate_checks_cost(dict(result, gate_bare_s=None)) is None
    # the tiers it times: the gate's arguments select the gate, the shards split the full tier
    runs_ = dict(bench_tiers.tier_runs(full=True, shards=3))
    assert ["--tier", "full"] in runs_.values() and ["-k", "parity"] in runs_.values()
    shards = [a for a in runs_.values() if "--splits" in a]
    assert [a[a.index("--group") + 1] for a in shards] == ["1", "2", "3"] and all(a[:2] == ["--tier", "full"] for a in shards)


def test_bench_refuses_a_foreign_compare_file(tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text("{}")
    assert main(["bench", "--case", "gs1", "--no-pytest", "--compare", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(other) in err and "schema" in err
