"""`parity bench`: one run writes the table and bench.json; --compare prints ratios; bad input is
one line. The figures themselves are measurements, never asserted."""

import json
from pathlib import Path

from parity import bench
from parity.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_bench_writes_every_figure_and_compares(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--case", "gs1", "--repeat", "1", "--no-pytest", "--out", str(out)]) == 0
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
    assert main(["bench", "--case", "gs1", "--repeat", "1", "--no-pytest", "--out", str(tmp_path / "b2.json"),
                 "--compare", str(out)]) == 0
    ratios = capsys.readouterr().out
    assert "new/old" in ratios and "tensorflow gs1 float64 forward" in ratios


def test_bench_times_pytest_cold_in_a_subprocess():
    timing = bench.pytest_wall(["tests/test_config.py", "-k", "defaults"], ROOT)
    assert timing["returncode"] == 0 and "1 passed" in timing["summary"], timing
    # the pytest process's own high-water mark (measured 48 MB: this run imports no framework),
    # not the size of the process that started it, which fork would carry into ru_maxrss
    assert timing["wall_s"] > 0 and 10 < timing["peak_rss_mb"] < 300
    assert timing["peak_rss_mb_children"] >= 0


def test_bench_refuses_a_foreign_compare_file(tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text("{}")
    assert main(["bench", "--case", "gs1", "--no-pytest", "--compare", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(other) in err and "schema" in err
