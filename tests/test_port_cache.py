"""The port in the reference cache (parity.recorded.sources, parity.recorded.cache): its numbers
replay only while its package is exactly what its sources make. A fault injected, a test's
monkeypatch or a constant set from outside is computed live and never stored; the harness
modules a model package imports are part of its source key."""

import numpy as np
import pytest

from parity.backends import BUILTIN
from parity.faults.catalogue import CATALOGUE
from parity.inputs.cases import get_case
from parity.recorded import cache, patches, sources


def test_a_clean_package_has_no_patched_name_even_after_its_models_ran():
    import models_numpy
    import models_torch

    cfg, weights, batch = get_case("gs1").inputs("float64")
    for package in (models_torch, models_numpy):
        package.build(cfg, weights).forward_train(batch)
    BUILTIN["torch"].configure("cpu")  # the device module fills its own state: not a patch
    assert sources.patched_names("models_torch") == []
    assert sources.patched_names("models_numpy") == []


@pytest.mark.parametrize("fault", CATALOGUE, ids=lambda f: f.name)
def test_every_injected_fault_is_seen_as_a_patch_and_gone_after_it(fault):
    with fault.inject():
        assert sources.patched_names("models_torch"), f"{fault.name} looks like the clean port"
    assert sources.patched_names("models_torch") == []


def test_each_fault_has_its_own_signature_the_same_each_time_it_is_injected():
    signatures = {}
    for fault in CATALOGUE:
        with fault.inject():
            first = patches.patch_signature("models_torch")
        with fault.inject():
            assert patches.patch_signature("models_torch") == first, fault.name
        signatures[fault.name] = first
    assert None not in signatures.values()  # the data fault too: it patches the harness's NPZ reading
    assert len(set(signatures.values())) == len(signatures), "two faults would share cache entries"
    assert patches.patch_signature("models_torch") == ""


def test_a_monkeypatched_function_method_constant_and_re_export_are_each_named(monkeypatch):
    import models_torch
    import models_torch.model as model
    import models_torch.physics as physics

    monkeypatch.setattr(physics, "MERGE_EPS", 0.002)
    monkeypatch.setattr(model.ForwardModel, "save", lambda self, path: path)
    monkeypatch.setattr(models_torch, "load", lambda path, **kw: None)
    monkeypatch.setattr(physics, "translate", lambda *a: None)
    assert sorted(sources.patched_names("models_torch")) == [
        "models_torch.load", "models_torch.model.ForwardModel", "models_torch.physics.MERGE_EPS",
        "models_torch.physics.translate"]


def test_a_patched_harness_module_the_port_reads_is_a_patch_of_the_port(monkeypatch):
    import parity.inputs.data as data

    assert sources.patched_names("models_torch") == []
    monkeypatch.setattr(data, "centre_window_mask", lambda N: None)  # models_torch.network reads it
    assert sources.patched_names("models_torch") == ["parity.inputs.data.centre_window_mask"]


def test_the_source_key_covers_the_parity_modules_a_package_imports(tmp_path, monkeypatch):
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("from userpkg.model import build\n")
    (package / "model.py").write_text("from parity.inputs import data\n\ndef build():\n"
                                      "    from parity.stages import TRAIN_STAGES\n    return TRAIN_STAGES\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reached = [name for name, _ in sources._source_files("userpkg")]
    assert reached[:2] == ["__init__.py", "model.py"]
    assert {"parity.inputs.data", "parity.stages", "parity.config"} <= set(reached)  # data imports the config
    before = sources.source_key("userpkg")
    (package / "model.py").write_text((package / "model.py").read_text() + "# edited\n")
    assert sources.source_key("userpkg") != before
    assert sources.source_key("no_such_package_here") is None


def _torch_backend(root):
    """The torch port through a caching backend, as a new session makes it."""
    return cache.caching_backend(BUILTIN["torch"], root)


def test_a_fault_is_filed_apart_from_the_clean_port_and_replayed_as_itself(tmp_path, monkeypatch):
    cache._fingerprints.cache_clear()
    monkeypatch.setattr(cache, "_fingerprints", cache._fingerprints)
    fault = next(f for f in CATALOGUE if f.name == "merge-translation-sign")
    cfg, weights, batch = get_case(fault.case).inputs("float64")
    clean = _torch_backend(tmp_path).build(cfg, weights).forward_train(batch)
    with fault.inject():
        faulty = _torch_backend(tmp_path).build(cfg, weights).forward_train(batch)
        assert not np.array_equal(faulty["object.canvas"], clean["object.canvas"])
        replayed = _torch_backend(tmp_path).build(cfg, weights)
        assert all(np.array_equal(replayed.forward_train(batch)[k], faulty[k]) for k in faulty)
        assert replayed._model is None, "the fault's numbers were computed again"
    other = next(f for f in CATALOGUE if f.name == "probe-conjugated")
    with other.inject():  # another fault on the same inputs: its own numbers
        assert not np.array_equal(_torch_backend(tmp_path).build(cfg, weights).forward_train(batch)["probe.illuminated"],
                                  faulty["probe.illuminated"])
    again = _torch_backend(tmp_path).build(cfg, weights)
    assert all(np.array_equal(again.forward_train(batch)[k], clean[k]) for k in clean)
    assert again._model is None, "the clean port was computed again instead of replayed"


def test_a_patch_applied_after_build_or_one_that_cannot_be_told_is_computed_and_not_stored(tmp_path, monkeypatch):
    import torch

    import models_torch.physics as physics

    cache._fingerprints.cache_clear()
    monkeypatch.setattr(cache, "_fingerprints", cache._fingerprints)
    cfg, weights, batch = get_case("gs1").inputs("float64")
    model = _torch_backend(tmp_path).build(cfg, weights)
    clean = model.forward_train(batch)
    stored = sorted(tmp_path.rglob("*.npz"))
    factor = torch.tensor(2.0, dtype=torch.float64)  # a tensor's value is not in its __dict__: cannot be told
    original = physics.diffraction_amplitude
    monkeypatch.setattr(physics, "diffraction_amplitude", lambda psi: original(psi) * factor)
    assert _torch_backend(tmp_path).code() is None
    late = model.forward_train(batch)  # built clean, its numbers stored, asked again after the patch
    fresh = _torch_backend(tmp_path).build(cfg, weights).forward_train(batch)
    for run in (late, fresh):
        np.testing.assert_allclose(run["diffraction.amplitude"], 2 * clean["diffraction.amplitude"], rtol=1e-12)
    assert sorted(tmp_path.rglob("*.npz")) == stored, "numbers of a patch that cannot be told were stored"


def test_a_spy_that_counts_calls_sees_every_call_in_every_session(tmp_path, monkeypatch):
    """A replacement closing over a list it fills is state, not a constant: never replayed."""
    import models_numpy.physics as physics

    cache._fingerprints.cache_clear()
    monkeypatch.setattr(cache, "_fingerprints", cache._fingerprints)
    cfg, weights, batch = get_case("gs1").inputs("float64")
    calls = []
    honest = physics.diffraction_amplitude
    monkeypatch.setattr(physics, "diffraction_amplitude", lambda psi: calls.append(1) or honest(psi))
    for session in (1, 2):
        numpy_backend = cache.caching_backend(BUILTIN["numpy"], tmp_path)
        assert numpy_backend.code() is None
        numpy_backend.build(cfg, weights).forward_train(batch)
        assert len(calls) == session
