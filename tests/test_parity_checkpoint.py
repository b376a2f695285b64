"""Per case and backend: a model saved and loaded back computes exactly what it computed before
saving. The seed bug's home: upstream lost `log_scale` on save, so the reloaded inference path
gave collapsed patches while the training path looked healthy."""

import numpy as np
import pytest

from parity.inputs.cases import get_case
from parity.stages import INFER_STAGES
from parity.inputs.weights import digest
from parity.backends import get_backend
from tests.backends import case_trace

pytestmark = pytest.mark.parity


# numpy's round trip in float32 is a run of its own (no other gate test needs numpy in float32):
# the full tier's; the reference's and the port's stay in the gate
@pytest.mark.parametrize("backend_name", ["tensorflow", "torch", pytest.param("numpy", marks=pytest.mark.full)])
def test_parity_saved_and_loaded_model_infers_what_it_trained_on(parity_case, backend_name, parity_run, tmp_path):
    run = parity_run(parity_case, backend_name, "float32", "cpu")  # the model the other parity tests use
    cfg, weights, batch = get_case(parity_case).inputs("float32")
    train = run.train
    loaded = get_backend(backend_name).load(run.model.save(tmp_path / f"{parity_case}.ckpt"))
    assert loaded.cfg == cfg and loaded.dtype == "float32"
    assert digest(loaded.weights()) == digest(weights)
    infer = loaded.forward_infer(batch)
    assert list(infer) == list(INFER_STAGES)
    for stage in INFER_STAGES:
        np.testing.assert_array_equal(infer[stage], train[stage], err_msg=f"{parity_case} {stage}")
    short = {"tensorflow": "tf"}.get(backend_name, backend_name)  # a model built on its own agrees
    np.testing.assert_array_equal(train["object.patches"], case_trace(short, parity_case, "float32")["object.patches"])


@pytest.mark.parametrize("backend_name", ["tensorflow", "torch", "numpy"])
@pytest.mark.full
@pytest.mark.processes
def test_parity_checkpoints_load_in_a_fresh_process(backend_name, parity_run, pytestconfig, tmp_path):
    """Every case's model saved here and loaded in a new Python process: nothing the loader
    needs may live only in this process (the seed bug lost log_scale exactly there)."""
    import subprocess
    import sys
    import textwrap

    from parity.inputs.cases import case_names

    names = case_names(pytestconfig.getoption("parity_cases"))
    for name in names:
        run = parity_run(name, backend_name, "float64", "cpu")
        run.model.save(tmp_path / f"{name}.ckpt")
        np.savez(tmp_path / f"{name}.npz", **{s: run.train[s] for s in INFER_STAGES})
    package = {"tensorflow": "models_tf", "torch": "models_torch", "numpy": "models_numpy"}[backend_name]
    script = textwrap.dedent(f"""
        import numpy as np
        import {package} as backend
        from parity.inputs.cases import get_case
        for name in {names!r}:
            model = backend.load({str(tmp_path)!r} + f"/{{name}}.ckpt")
            _, _, batch = get_case(name).inputs("float64")
            infer = model.forward_infer(batch)
            ref = np.load({str(tmp_path)!r} + f"/{{name}}.npz")
            for stage in ref.files:
                assert np.array_equal(infer[stage], ref[stage]), (name, stage)
        print("identical", len({names!r}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"identical {len(names)}" in done.stdout
