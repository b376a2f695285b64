"""A backend run in a process of its own (parity.recorded.remote), as the pytest plugin runs the
TensorFlow reference: the same numbers as in this process, its errors with the line that raised,
its framework never imported here. numpy's backend stands in, under a package this process has
not imported (tests/remote_numpy): a child that imports numpy starts in a second."""

import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from parity.backends import Backend, get_backend
from parity.inputs.cases import get_case
from parity.recorded.remote import RemoteModel, out_of_process, pid_of


STAND_IN = Backend("numpy", "numpy", ("cpu",), package="tests.remote_numpy")


@pytest.fixture
def remote():
    backend = out_of_process(STAND_IN)
    yield backend
    backend.child.close()
    sys.modules.pop(STAND_IN.package, None)  # a test that imported it here: the next one's child builds again


def test_a_remote_model_gives_the_numbers_of_one_built_here(remote):
    cfg, weights, batch = get_case("gs1").inputs("float64")
    model = remote.build(cfg, weights)
    assert isinstance(model, RemoteModel) and pid_of(remote) not in (None, os.getpid())
    here = get_backend("numpy").build(cfg, weights)
    there, mine = model.forward_train(batch), here.forward_train(batch)
    assert sorted(there) == sorted(mine)
    for name in mine:
        np.testing.assert_array_equal(there[name], mine[name], err_msg=name)
    assert model.cfg == cfg and model.dtype == here.dtype
    assert remote.can("teacher_forcing") and not remote.can("gradients")


def test_a_generator_gives_its_records_then_its_raise(remote):
    model = remote.build(*get_case("gs1").inputs("float64")[:2])
    assert list(model.steps(3)) == [{"step": 0}, {"step": 1}, {"step": 2}]
    records = []
    with pytest.raises(Exception, match="step 2 failed"):
        for record in model.steps(4, fail_at=2):
            records.append(record)
    assert records == [{"step": 0}, {"step": 1}]


def test_a_value_that_does_not_pickle_stays_there_and_answers_from_there(remote):
    model = remote.build(*get_case("gs1").inputs("float64")[:2])
    counter = model.counter()
    assert isinstance(counter, RemoteModel)
    assert [counter.next(), counter.next()] == [1, 2] and counter.count == 2


def test_a_raise_in_the_child_names_its_type_and_the_line_that_raised(remote):
    from parity.run.failures import failure_from

    cfg, w64, _ = get_case("gs1").inputs("float64")
    _, _, batch32 = get_case("gs1").inputs("float32")
    model = remote.build(cfg, w64)
    with pytest.raises(Exception, match="batch is float32 but the model is float64") as raised:
        model.forward_train(batch32)
    failure = failure_from(raised.value, "forward")
    assert failure.type == "ModelError"
    assert failure.where is not None and "models_numpy" in failure.where  # the child's frame, not the proxy's
    assert "tests.remote_numpy" not in sys.modules  # no class of the backend's package rebuilt here
    assert "Traceback" in failure.traceback and "models_numpy" in failure.traceback


def test_a_package_patched_here_is_built_here(remote, monkeypatch):
    """A fault injected in this process must decide the numbers: the child cannot see it."""
    cfg, weights, batch = get_case("gs1").inputs("float64")
    clean = remote.build(cfg, weights)
    import tests.remote_numpy as package

    monkeypatch.setattr(package, "build", lambda *args, **kwargs: SimpleNamespace(forward_train=lambda b: {"patched": 0}))
    patched = remote.build(cfg, weights)
    assert not isinstance(patched, RemoteModel) and "patched" in patched.forward_train(batch)
    with pytest.raises(RuntimeError, match="patched in this process after this model was built"):
        clean.forward_train(batch)


def test_the_process_that_asks_never_imports_the_backends_package():
    """In a fresh process (this one imported the package in another test)."""
    script = textwrap.dedent("""
        import sys
        from parity.backends import Backend
        from parity.inputs.cases import get_case
        from parity.recorded.remote import out_of_process

        cfg, weights, batch = get_case("gs1").inputs("float64")
        backend = out_of_process(Backend("numpy", "numpy", ("cpu",), package="tests.remote_numpy"))
        backend.configure("cpu")
        out = backend.build(cfg, weights).forward_infer(batch)
        assert "tests.remote_numpy" not in sys.modules, "imported here"
        print(len(out), out["object.trimmed"].dtype)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[0]) > 0 and done.stdout.split()[1] == "complex128"


def test_a_child_that_died_is_one_clear_error_and_the_next_build_starts_another(remote):
    import signal

    cfg, weights, batch = get_case("gs1").inputs("float64")
    model = remote.build(cfg, weights)
    first = pid_of(remote)
    os.kill(first, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="backend 'numpy': its process ended without an answer"):
        model.forward_train(batch)
    again = remote.build(cfg, weights)
    assert pid_of(remote) not in (None, first) and "object.trimmed" in again.forward_infer(batch)
    with pytest.raises(RuntimeError, match="the process that held this model has ended; build it again"):
        model.forward_train(batch)


def test_models_let_go_of_here_are_freed_there_with_the_next_request(remote):
    import gc

    cfg, weights, _ = get_case("gs1").inputs("float64")
    model = remote.build(cfg, weights)
    del model
    gc.collect()
    assert remote.child.dropped == [1]  # the first model there
    remote.can("teacher_forcing")
    assert remote.child.dropped == []
