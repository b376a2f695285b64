"""`parity bench`: one run writes the table and bench.json; --compare prints ratios; bad input is
one line. The figures themselves are measurements, never asserted."""

import json
from pathlib import Path

import pytest

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
        assert all(r[k] > 0 for k in ("build_s", "forward_s", "gradient_s", "adam_step_s")), r
    assert set(result["harness"][0]) == {"case", "summaries_s", "comparison_s", "arbitration_s", "checkpoints_s",
                                         "dump_s", "golden_s"}
    assert result["bare_with_training_s"] > result["bare_forward_s"] > sum(result["imports_s"].values())
    assert result["peak_rss_mb"] > 100 and "bare cost" in printed and "gs1" in printed
    ratios = printed[printed.index("new/old"):].splitlines()
    forward = next(line for line in ratios if line.startswith("tensorflow gs1 float64 forward"))
    row = next(r for r in result["backends"] if (r["backend"], r["dtype"]) == ("tensorflow", "float64"))
    assert float(forward.split()[-1]) == pytest.approx(row["forward_s"], abs=0.006)  # new / 1.0, printed %.2f
    assert not any(line.startswith("tensorflow gs1 float32") for line in ratios)  # only what both hold


@pytest.mark.parametrize("workers", ["0", "2"])
def test_bench_times_pytest_cold_in_a_subprocess(workers):
    timing = bench_tiers.pytest_wall(["-n", workers, "tests/test_config.py", "-k", "defaults"], ROOT, "config")
    assert timing["returncode"] == 0 and "1 passed" in timing["summary"], timing
    assert timing["label"] == "config" and timing["command"].startswith("pytest -n")
    # one record per test process: the main one, and each worker under -n 2
    expected = {"main"} if workers == "0" else {"main", "gw0", "gw1"}
    assert set(timing["peak_rss_mb_by_process"]) == expected
    # each process's own high-water mark (measured ≈ 50 MB: this run imports no framework), not
    # the size of the process that started it, which fork would carry into ru_maxrss
    assert all(10 < mb < 300 for mb in timing["peak_rss_mb_by_process"].values()), timing
    assert timing["peak_rss_mb_max"] == max(timing["peak_rss_mb_by_process"].values())
    assert 0 < timing["first_result_s"] <= timing["first_run_s"] < timing["wall_s"]


def test_the_tiers_bench_times():
    labels = [label for label, _ in bench_tiers.tier_runs(full=True, shards=4)]
    assert labels[:3] == ["gate: pytest -k parity", "gate: make test (whole gate tier)", "full tier: make test-full"]
    assert dict(bench_tiers.tier_runs(shards=4))["full tier, shard 3/4"] == ["--tier", "full", "--splits", "4", "--group", "3"]
    assert len(bench_tiers.tier_runs()) == 2


def test_bench_refuses_a_foreign_compare_file(tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text("{}")
    assert main(["bench", "--case", "gs1", "--no-pytest", "--compare", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(other) in err and "schema" in err
