"""The reference cache (parity.recorded.cache): a later session replays the reference's numbers
bit for bit without building its model, recomputes where anything that decides them changed or
an entry is damaged, and hands a live model to every call it does not replay."""

import dataclasses

import numpy as np
import pytest

from parity.backends import BUILTIN
from parity.inputs.cases import get_case
from parity.recorded import cache


@pytest.fixture
def counting(monkeypatch):
    """The numpy backend with a count of its live builds (a fresh fingerprint per test)."""
    cache._fingerprints.cache_clear()
    monkeypatch.setattr(cache, "_fingerprints", cache._fingerprints)
    builds = []
    numpy = BUILTIN["numpy"]

    def build(cfg, weights, device="cpu", **state):
        builds.append(cfg.to_dict())
        return numpy.build(cfg, weights, device=device, **state)

    return dataclasses.replace(numpy, build_fn=build), builds


def _session(live, root, case="gs1", dtype="float64"):
    """One session's model of `case` through a fresh caching backend (as a new process makes)."""
    backend = cache.caching_backend(live, root)
    cfg, weights, batch = get_case(case).inputs(dtype)
    return backend.build(cfg, weights, **get_case(case).state(dtype)), batch


def test_a_second_session_replays_every_number_without_building_the_model(counting, tmp_path):
    live, builds = counting
    first, batch = _session(live, tmp_path)
    train, infer, state = first.forward_train(batch), first.forward_infer(batch), first.state()
    assert len(builds) == 1
    second, batch = _session(live, tmp_path)
    replayed = second.forward_train(batch)
    assert len(builds) == 1, "the second session built the model"
    assert replayed.keys() == train.keys()
    for stage in train:
        assert replayed[stage].dtype == train[stage].dtype and np.array_equal(replayed[stage], train[stage]), stage
    assert all(np.array_equal(second.forward_infer(batch)[k], infer[k]) for k in infer)
    assert second.state()["log_scale"] == state["log_scale"]
    assert np.array_equal(second.state()["probe"], state["probe"])
    assert len(builds) == 1
    # a call it does not replay goes to a live model, built with the state the replay left
    assert second.stage("object.patches", train, batch).shape == train["object.patches"].shape
    assert len(builds) == 2


def test_a_changed_thread_setting_source_or_input_is_computed_again(counting, tmp_path, monkeypatch):
    live, builds = counting
    model, batch = _session(live, tmp_path)
    model.forward_train(batch)
    monkeypatch.setenv("PARITY_NUM_THREADS", "7")
    cache._fingerprints.cache_clear()
    model, batch = _session(live, tmp_path)
    model.forward_train(batch)
    monkeypatch.setattr(cache, "source_key", lambda name: "edited")
    cache._fingerprints.cache_clear()
    model, batch = _session(live, tmp_path)
    model.forward_train(batch)
    other, batch = _session(live, tmp_path, case="gs2-small")
    other.forward_train(batch)
    assert len(builds) == 4
    # the older fingerprints are pruned: two kept
    assert len([p for p in (tmp_path / "numpy").iterdir()]) == cache.KEPT


def test_a_damaged_entry_is_computed_again_and_rewritten(counting, tmp_path):
    live, builds = counting
    model, batch = _session(live, tmp_path)
    train = model.forward_train(batch)
    (entry,) = (tmp_path / "numpy").glob("*/*/train-*.npz")
    entry.write_bytes(entry.read_bytes()[:100])  # a session killed while writing it
    model, batch = _session(live, tmp_path)
    again = model.forward_train(batch)
    assert len(builds) == 2 and all(np.array_equal(again[k], train[k]) for k in train)
    model, batch = _session(live, tmp_path)
    model.forward_train(batch)
    assert len(builds) == 2  # rewritten whole


def test_replayed_adam_steps_leave_the_live_model_trained(tmp_path):
    from parity.run.training import AdamConfig

    cache._fingerprints.cache_clear()
    torch = BUILTIN["torch"]  # float32: the same replay as float64, at a fraction of its convolutions' cost
    first, batch = _session(torch, tmp_path, dtype="float32")
    untrained = first.forward_train(batch)["decoder.amp"]
    recorded = list(first.train_steps(batch, 2, AdamConfig()))
    trained = first.weights()
    second, batch = _session(torch, tmp_path, dtype="float32")
    replayed = list(second.train_steps(batch, 2, AdamConfig()))
    assert second._model is None, "the steps were computed, not replayed"
    assert [r["loss"] for r in replayed] == [r["loss"] for r in recorded]
    assert all(np.array_equal(replayed[-1]["tensors"][k], recorded[-1]["tensors"][k]) for k in recorded[-1]["tensors"])
    after = second.weights()  # the live model takes the steps before it answers
    assert all(np.array_equal(after[k], trained[k]) for k in trained)
    # after the steps its numbers are no longer the entry's: a forward is the trained live model's
    trained_forward = second.forward_train(batch)
    assert np.array_equal(trained_forward["decoder.amp"], first.forward_train(batch)["decoder.amp"])
    assert not np.array_equal(trained_forward["decoder.amp"], untrained)


PLUGIN_TEST = '''
import numpy as np
import pytest

pytestmark = pytest.mark.parity


def test_numpy_run(parity_run):
    run = parity_run("gs1", "numpy", "float64")
    assert np.isfinite(run.train["object.canvas"]).all()
'''


def test_the_plugin_fills_the_cache_replays_it_and_leaves_it_alone_when_asked(pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(test_user=PLUGIN_TEST)
    folder = pytester.path / ".parity-cache" / "numpy"
    off = pytester.runpytest("-p", "no:cacheprovider", "-n", "0", "--parity-ref", "numpy", "--parity-no-cache")
    off.assert_outcomes(passed=1)
    off.stdout.fnmatch_lines(["ptycho-parity: reference numpy on cpu, port torch on cpu; computed afresh"])
    assert not folder.exists()
    cold = pytester.runpytest("-p", "no:cacheprovider", "-n", "0", "--parity-ref", "numpy")
    cold.assert_outcomes(passed=1)
    cold.stdout.fnmatch_lines(["ptycho-parity: reference numpy on cpu, port torch on cpu; "
                               "replayed from */.parity-cache where unchanged"])
    written = {p: p.stat().st_mtime_ns for p in folder.glob("*/*/*.npz")}
    assert any(p.name.startswith("train-") for p in written)
    warm = pytester.runpytest("-p", "no:cacheprovider", "-n", "0", "--parity-ref", "numpy")
    warm.assert_outcomes(passed=1)
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*/*/*.npz")} == written  # read, not written again


def test_a_checkpoint_round_trip_and_a_stage_are_replayed_without_the_live_model(counting, tmp_path):
    live, builds = counting
    loads = []
    numpy = live

    def load(path, device="cpu", cfg=None):
        loads.append(str(path))
        return BUILTIN["numpy"].load(path, device=device)

    live = dataclasses.replace(numpy, load_fn=load)
    sessions = []
    for _ in range(2):  # the first computes and stores, the second replays
        backend = cache.caching_backend(live, tmp_path / "cache")
        cfg, weights, batch = get_case("gs1").inputs("float64")
        model = backend.build(cfg, weights)
        train = model.forward_train(batch)
        saved = model.save(tmp_path / f"{len(sessions)}.npz")
        loaded = backend.load(saved)
        sessions.append((saved.read_bytes(), loaded.forward_infer(batch), loaded.weights(),
                         model.stage("encoder.out", train, batch)))
    assert len(builds) == 1 and len(loads) == 1, "the second session built or loaded a live model"
    (bytes0, infer0, weights0, stage0), (bytes1, infer1, weights1, stage1) = sessions
    assert bytes0 == bytes1  # the very checkpoint file the live model wrote
    assert all(np.array_equal(infer0[k], infer1[k]) for k in infer0)
    assert all(np.array_equal(weights0[k], weights1[k]) for k in weights0)
    assert np.array_equal(stage0, stage1) and np.array_equal(stage1, train["encoder.out"])


def test_a_replayed_model_knows_its_config_and_dtype_without_the_live_one(counting, tmp_path):
    live, builds = counting
    model, batch = _session(live, tmp_path, dtype="float32")
    assert model.cfg == get_case("gs1").config and model.dtype == "float32" and builds == []
