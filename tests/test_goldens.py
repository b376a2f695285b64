"""Golden files: serializer, comparator, storage, and `parity refresh` (numpy and one reference run)."""

import copy
import json
import os

import pytest

from parity.goldens import store as goldens
from parity.cli import main
from parity.goldens.store import (GoldenError, compare_golden, dumps, flatten, golden_path, iter_goldens,
                            load_golden, load_golden_profile, write_atomic)
from parity.goldens.refresh import apply, plan, RefreshRefused
from parity.inputs.cases import get_case

COMMITTED = list(iter_goldens())
PROFILES = [(d, t) for d in ("cpu", "cuda") for t in ("float32", "float64")]


def test_every_case_has_a_golden():
    from parity.inputs.cases import case_names

    assert sorted(p.stem for p in COMMITTED) == sorted(case_names("all"))


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_golden_is_canonical_and_matches_itself(path):
    golden = load_golden(path)
    assert path.read_text() == dumps(golden)  # sorted keys, stable formatting, round-trip floats
    assert set(golden["digests"]) == {"float32", "float64"}
    for device, dtype in PROFILES:
        result = compare_golden(golden, golden["summaries"], golden["digests"][dtype], dtype,
                                load_golden_profile(device, dtype))
        assert result.passed and result.compared > 50


def _set_flat(tree, key: str, value) -> None:
    """Set the leaf that `flatten` names `key`; a dict key may itself hold dots (tensor names)."""
    while True:
        if isinstance(tree, list):
            head, _, key = key.partition(".")
            if not key:
                tree[int(head)] = value
                return
            tree = tree[int(head)]
            continue
        if key in tree:
            tree[key] = value
            return
        head = next(k for k in tree if key.startswith(k + "."))
        tree, key = tree[head], key[len(head) + 1:]


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_a_50_percent_change_of_any_golden_number_is_caught(path):
    """Every non-zero golden number changed by 50 % fails the float64 checks, with its key named.
    The float32 checks catch it too unless the number sits below the float32 resolution of its
    stage (the abs floor of its tolerance key, e.g. a diffraction minimum of 5e-6 next to a
    maximum of 2e3): there half of it is rounding, and only the float64 runs can judge it."""
    golden = load_golden(path)
    numbers = {k: v for k, v in flatten(golden["summaries"]).items()
               if isinstance(v, float) and v != 0.0}
    assert len(numbers) > 30
    changed = copy.deepcopy(golden["summaries"])
    for device, dtype in PROFILES:
        profile = load_golden_profile(device, dtype)
        for key, value in numbers.items():
            if dtype == "float32" and 0.5 * abs(value) <= profile.for_key(key).abs:
                assert key.endswith(".min") or ".amplitude_range." in key, key  # only near-zero minima
                continue
            _set_flat(changed, key, value * 1.5)  # one key at a time: put back after its comparison
            result = compare_golden(golden, changed, golden["digests"][dtype], dtype, profile)
            _set_flat(changed, key, value)
            assert [m.key for m in result.mismatches] == [key], (device, dtype, key)


def test_changed_inputs_are_named_before_anything_else():
    golden = load_golden(golden_path("gs1"))
    digests = copy.deepcopy(golden["digests"]["float64"])
    digests["inputs"]["offsets"] = "0" * 64
    digests["weights"] = "1" * 64
    summaries = copy.deepcopy(golden["summaries"])
    summaries["patch_stats"]["global_mean"] *= 2
    result = compare_golden(golden, summaries, digests, "float64", load_golden_profile("cpu", "float64"))
    message = result.message("gs1.json")
    assert message.splitlines()[0].startswith("inputs changed: offsets, weights")
    assert "patch_stats.global_mean: golden" in message and "allowed" in message


@pytest.mark.parametrize("text, needle", [
    ("{not json", "not valid JSON (line 1"),
    ("[1, 2]", "a golden must be a JSON object"),
    (json.dumps({"schema": 99}), "key 'schema' is 99"),
    (json.dumps({"schema": 1, "case": "gs1", "config": {}, "digests": {}}), "key 'summaries' missing"),
    (json.dumps({"schema": 1, "case": "gs1", "config": {}, "digests": {}, "summaries": {"patch_stats": {}}}),
     "key 'summaries.canvas' missing"),
    (json.dumps({"schema": 1, "case": 3, "config": {}, "digests": {}, "summaries": {}}), "key 'case' must be a str"),
])
def test_corrupt_golden_is_one_line_naming_file_and_key(tmp_path, text, needle):
    path = tmp_path / "gs1.json"
    path.write_text(text)
    with pytest.raises(GoldenError) as info:
        load_golden(path)
    assert str(path) in str(info.value) and needle in str(info.value) and "\n" not in str(info.value)


def test_wrong_types_inside_summaries(tmp_path):
    golden = load_golden(golden_path("gs1"))
    golden["summaries"]["canvas"]["amplitude"]["max"] = None
    (tmp_path / "b.json").write_text(json.dumps(golden))
    with pytest.raises(GoldenError, match="summaries.canvas.amplitude.max' must be a number"):
        load_golden(tmp_path / "b.json")


def test_bad_golden_tolerance_table(tmp_path):
    bad = tmp_path / "tol.toml"
    bad.write_text('[golden.cpu.float64]\n"*" = 1e-9\n')
    from parity.run.tolerances import ToleranceError

    with pytest.raises(ToleranceError, match="must be a table like"):
        load_golden_profile("cpu", "float64", bad)
    with pytest.raises(ToleranceError, match="key 'golden.cpu.float32' missing"):
        load_golden_profile("cpu", "float32", bad)


def test_write_atomic_never_leaves_a_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "g.json"
    write_atomic(path, "old\n")

    def crash(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(goldens.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["g.json"]


# -- parity refresh -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gs1_plan(tmp_path_factory):
    """One reference run of gs1 planned against an empty folder (the only TensorFlow run here)."""
    folder = tmp_path_factory.mktemp("goldens")
    lines = []
    planned = plan([get_case("gs1")], "all", folder, progress=lines.append)
    assert lines[-1] == "[1/1] gs1: made by tensorflow on cpu in float64"  # the run it made, said
    return folder, planned


def _replan(planned, folder, mode):
    """Re-decide a plan for `mode` from the same reference golden, without running TF again."""
    import parity.goldens.recipe as recipe

    golden = planned[0].golden
    original = recipe.reference_golden
    recipe.reference_golden = lambda case, data=None: golden
    try:
        return plan([get_case("gs1")], mode, folder)
    finally:
        recipe.reference_golden = original


def test_refresh_modes(gs1_plan, tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    _, first = gs1_plan
    folder = tmp_path
    assert [p.status for p in _replan(first, folder, "failing")] == ["new"]
    new = _replan(first, folder, "new")
    assert new[0].write and apply(new) == [folder / "gs1.json"]
    assert load_golden(folder / "gs1.json")["summaries"] == first[0].golden["summaries"]
    # unchanged: --new and --failing write nothing, --all rewrites
    assert [p.write for p in _replan(first, folder, "new")] == [False]
    assert [(p.status, p.write) for p in _replan(first, folder, "failing")] == [("unchanged", False)]
    assert [p.write for p in _replan(first, folder, "all")] == [True]
    # a golden 50 % off: --failing rewrites it and the table shows old → new
    golden = load_golden(folder / "gs1.json")
    golden["summaries"]["patch_stats"]["global_std"] *= 1.5
    (folder / "gs1.json").write_text(dumps(golden))
    failing = _replan(first, folder, "failing")
    assert (failing[0].status, failing[0].write) == ("out of tolerance", True)
    assert [k for k, _, _ in failing[0].changes] == ["summaries.patch_stats.global_std"]
    assert [p.write for p in _replan(first, folder, "new")] == [False]
    # corrupt: --failing replaces it, --new leaves it
    (folder / "gs1.json").write_text("{broken")
    assert [(p.status, p.write) for p in _replan(first, folder, "failing")] == [("corrupt", True)]
    assert [p.write for p in _replan(first, folder, "new")] == [False]


@pytest.mark.parametrize("edit, key", [
    (lambda g: g["summaries"]["canvas"]["amplitude"].update(max=float("nan")), "'summaries.canvas.amplitude.max' is NaN"),
    (lambda g: g["summaries"]["patch_stats"].update(global_std=float("-inf")), "'summaries.patch_stats.global_std' is -Infinity"),
    (lambda g: g.update(provenance=None), "'provenance' must be an object, got null"),
    (lambda g: g.update(provenance="by hand"), "'provenance' must be an object, got str"),
], ids=["nan", "-inf", "provenance-null", "provenance-string"])
def test_refresh_failing_repairs_a_golden_it_cannot_read(gs1_plan, tmp_path, monkeypatch, edit, key):
    """A golden holding NaN/Inf or a provenance that is no object is corrupt: --failing rewrites
    it, naming the file and the key it could not read; --new keeps it and says why."""
    monkeypatch.delenv("CI", raising=False)
    _, first = gs1_plan
    golden = json.loads(dumps(first[0].golden))
    edit(golden)
    path = tmp_path / "gs1.json"
    path.write_text(json.dumps(golden))  # Python's json writes NaN and Infinity as JavaScript does
    failing = _replan(first, tmp_path, "failing")
    assert (failing[0].status, failing[0].write) == ("corrupt", True)
    assert failing[0].note.startswith(f"{path}: key {key}")
    kept = plan([get_case("gs1")], "new", tmp_path)  # no reference run: --new never writes over a file
    assert (kept[0].status, kept[0].write) == ("corrupt", False) and key in kept[0].note
    apply(failing)
    assert load_golden(path)["summaries"] == first[0].golden["summaries"]


def test_refresh_refuses_in_ci(gs1_plan, monkeypatch):
    monkeypatch.setenv("CI", "true")
    folder, planned = gs1_plan
    with pytest.raises(RefreshRefused, match="CI is set"):
        apply(planned)
    assert not list(folder.iterdir())


def test_refresh_crash_between_two_writes_leaves_valid_goldens(gs1_plan, tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    _, planned = gs1_plan
    item = planned[0]
    old = dumps(dict(item.golden, case="gs1-old"))
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(old)
    second.write_text(old)
    items = [type(item)(item.case, first, "changed", True, item.golden),
             type(item)(item.case, second, "changed", True, item.golden)]
    real_replace, calls = os.replace, []

    def replace_then_crash(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed between the first and the second golden
        real_replace(src, dst)

    monkeypatch.setattr(goldens.os, "replace", replace_then_crash)
    with pytest.raises(KeyboardInterrupt):
        apply(items)
    assert json.loads(first.read_text())["case"] == "gs1" and json.loads(second.read_text())["case"] == "gs1-old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_refresh_cli_dry_run_and_ci(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CI", "1")
    assert main(["refresh", "--new", "--case", "gs1", "--goldens", str(tmp_path)]) == 2
    assert "CI is set" in capsys.readouterr().err
    assert main(["refresh", "--case", "nope"]) == 2
    assert "unknown case 'nope'" in capsys.readouterr().err


@pytest.fixture
def reference_must_not_run(monkeypatch):
    """Fail if `parity refresh` runs the reference; count the runs it is allowed."""
    import parity.goldens.recipe as recipe

    runs = []

    def forbidden(case, data=None):
        runs.append(case.name)
        raise AssertionError(f"reference run of {case.name}")

    monkeypatch.setattr(recipe, "reference_golden", forbidden)
    return runs


def _fingerprinted_copy(folder, names):
    """The committed goldens of `names`, with the fingerprint this checkout would write (the
    committed ones match the commit that wrote them; any later edit of a source they cover
    only makes the refresh run the reference again)."""
    from parity.goldens.fingerprint import fingerprint, inputs_key

    for name in names:
        golden = load_golden(golden_path(name))
        golden["provenance"]["fingerprint"] = fingerprint(golden, inputs_key(get_case(name)))
        (folder / f"{name}.json").write_text(dumps(golden))
    return folder


def test_refresh_trusts_a_matching_fingerprint_without_running(reference_must_not_run, tmp_path, capsys):
    """Where nothing that decides a golden changed, --dry-run and --failing decide from the
    fingerprint alone and run no model."""
    from parity.inputs.cases import case_names

    folder = _fingerprinted_copy(tmp_path, case_names("all"))
    planned = plan([get_case(n) for n in case_names("all")], "failing", folder)
    assert [(p.status, p.write) for p in planned] == [("unchanged", False)] * len(planned)
    assert all("fingerprint matches" in p.note for p in planned) and reference_must_not_run == []
    assert main(["refresh", "--dry-run", "--cases", "default", "--goldens", str(folder)]) == 0
    assert "4 unchanged; dry run: 0 golden(s) would be written" in capsys.readouterr().out


@pytest.mark.parametrize("change", ["edited summary", "no fingerprint", "other tensorflow", "other source"])
def test_refresh_reruns_where_the_fingerprint_does_not_match(change, reference_must_not_run, tmp_path, monkeypatch):
    import parity.goldens.fingerprint as fp

    golden = load_golden(_fingerprinted_copy(tmp_path, ["gs1"]) / "gs1.json")
    if change == "edited summary":
        golden["summaries"]["patch_stats"]["global_std"] *= 1 + 1e-12  # within tolerance, still a change
    elif change == "no fingerprint":
        del golden["provenance"]["fingerprint"]  # a golden written before fingerprints
    elif change == "other tensorflow":
        versions = fp._versions()
        monkeypatch.setattr(fp, "_versions", lambda: dict(versions, tensorflow="0.0.1"))
    else:
        sources = fp._package_sources("models_tf")
        edited = tmp_path / sources[0].name
        edited.write_bytes(sources[0].read_bytes() + b"\n# edited\n")
        monkeypatch.setattr(fp, "_package_sources", lambda package: [edited, *sources[1:]])
    (tmp_path / "gs1.json").write_text(dumps(golden))
    with pytest.raises(AssertionError, match="reference run of gs1"):
        plan([get_case("gs1")], "failing", tmp_path)
    assert reference_must_not_run == ["gs1"]


def test_refresh_recompute_and_all_always_run(reference_must_not_run, tmp_path):
    folder = _fingerprinted_copy(tmp_path, ["gs1"])
    for mode, recompute in (("failing", True), ("new", True), ("all", False)):
        with pytest.raises(AssertionError, match="reference run of gs1"):
            plan([get_case("gs1")], mode, folder, recompute=recompute)
    assert reference_must_not_run == ["gs1"] * 3
