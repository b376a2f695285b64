"""Where an error is born (docs/design.md §12): every origin of a run, each blamed by numpy from the
reference's inputs, for two independent faults at once and for a fault born under its tolerance
and amplified over it downstream (tests.origin_cases.ORIGIN_CASES)."""

import pytest

from parity.faults.evaluate import find_origins
from tests.origin_cases import ORIGIN_CASES
from parity.plugin.devices import require_backend

pytestmark = pytest.mark.parity


# the gate: one double fault (network + physics) and the amplified one; the full tier: every case
ORIGIN_PARAMS = [pytest.param(c, id=c.name, marks=[] if c.name in ("avg-pool+probe-conjugated", "encoder-off-by-9e-13")
                              else [pytest.mark.full]) for c in ORIGIN_CASES]


@pytest.mark.parametrize("origin_case", ORIGIN_PARAMS)
def test_parity_every_origin_in_one_run(origin_case, parity_ref):
    require_backend(parity_ref)
    result, found = find_origins(origin_case, ref=parity_ref)
    assert found == origin_case.expected_origins, result.report()
    stages = result.comparisons["torch"].stages
    origins = [s.stage for s in stages if s.mark == "origin"]
    assert origins == [stage for stage, _ in origin_case.expected_origins]
    # everything that fails end to end and is no origin only carries an error born upstream
    first_origin = [s.stage for s in stages].index(origins[0])
    assert all(s.mark == "propagated" for s in stages if not s.passed and s.stage not in origins)
    assert all(s.mark == "ok" for s in stages[:first_origin])
    verdict = next(r for r in result.results if r.check == "origins").summary
    assert verdict.startswith(f"{len(origins)} origin")
    for stage, _ in origin_case.expected_origins:
        assert stage in verdict


@pytest.mark.full  # the gate runs the same case above; this reads the arbitration and the summary too
def test_parity_an_amplified_error_is_blamed_where_it_is_born(parity_ref):
    """The end-to-end check sees the error first at object.patches, where numpy says both sides
    agree from their own inputs; the origins check names the encoder, where it was born."""
    require_backend(parity_ref)
    case = next(c for c in ORIGIN_CASES if c.name == "encoder-off-by-9e-13")
    result, found = find_origins(case, ref=parity_ref)
    first = result.comparisons["torch"].first_divergence
    assert first.stage == "object.patches" and first.mark == "propagated"
    assert "carried in from earlier stages" in result.arbitrations["torch"]["verdict"]
    assert found == (("encoder.out", "torch"),)
    encoder = next(s for s in result.comparisons["torch"].stages if s.stage == "encoder.out")
    assert encoder.passed and encoder.local_error < encoder.tolerance  # born under the tolerance
    summary = next(r for r in result.results if r.check == "origins").summary
    assert "amplified over it by object.patches" in summary


@pytest.mark.full
@pytest.mark.processes
def test_parity_check_writes_a_minimal_reproduction_that_runs_in_a_fresh_process(tmp_path, capsys, parity_ref):
    """`parity check --repro DIR` on a port whose probe is conjugated: one origin, reduced to the
    worst element's group and channel; its script, run in a fresh process where the port has the
    same bug, prints the same local error."""
    import json
    import subprocess
    import sys

    from parity.cli import main
    from parity.faults.catalogue import get_fault

    require_backend(parity_ref)
    with get_fault("probe-conjugated").inject():
        code = main(["check", "--case", "gs2-big", "--dtype", "float64", "--ref", parity_ref,
                     "--out", str(tmp_path / "out"), "--repro", str(tmp_path / "repro")], reuse=(parity_ref,))
    out = capsys.readouterr().out
    assert code == 1 and "1 origin: probe.illuminated (torch; numpy agrees with" in out
    folder = tmp_path / "repro" / "gs2-big-float64-torch-probe.illuminated"
    meta = json.loads((folder / "repro.json").read_text())
    assert len(meta["groups"]) == 1 and meta["channel"] is not None  # one group, one channel still fail
    assert meta["local_error"] > meta["tolerance"]
    # the script rebuilds the models from what it carries, not from a case name (a case file's case too)
    from parity.inputs.cases import get_case

    case = get_case("gs2-big")
    assert meta["config"] == case.config.to_dict() and meta["weights"] == {"seed": case.weight_seed,
                                                                             "scheme": case.weight_scheme}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "minimal reproduction" in report and "probe.illuminated" in report
    assert "| local error | amplification | mark |" in report and "| **origin** |" in report
    # a figure of the origin and the error histograms of the failing stages, embedded in the report
    for figure in ("origin_torch_probe_illuminated_float64.png", "errors_float64.png"):
        assert (tmp_path / "out" / "gs2-big" / figure).is_file() and f"(gs2-big/{figure})" in report
    # the port's code carries the bug in the fresh process too (here: injected before the script runs)
    runner = ("import runpy, sys; from parity.faults.catalogue import get_fault\n"
              "with get_fault('probe-conjugated').inject():\n"
              "    runpy.run_path(sys.argv[1], run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", runner, str(folder / "repro.py")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert f"local error against {parity_ref}: {meta['local_error']:.3e}" in lines["torch"], done.stdout
    assert float(lines["numpy"].split()[-1]) < meta["tolerance"]  # numpy sides with the reference


@pytest.mark.full
def test_parity_a_pointwise_origin_is_reduced_to_a_window_around_its_worst_element(tmp_path, parity_ref):
    """diffraction.scaled with exp(−log_scale): every pixel is computed from the same pixel of its
    input, so the reproduction keeps one group, one channel and CROP × CROP pixels around the
    worst element, and still fails there."""
    import json

    import numpy as np

    from tests.origin_cases import OriginCase
    from parity.report.repro import CROP

    require_backend(parity_ref)
    case = OriginCase("intensity-scale-inverted", "", "gs2-big", ("intensity-scale-inverted",),
                      (("diffraction.scaled", "torch"),))
    result, found = find_origins(case, ref=parity_ref, repro_dir=tmp_path)
    assert found == case.expected_origins
    worst = next(s for s in result.comparisons["torch"].stages if s.stage == "diffraction.scaled").worst_at
    meta = json.loads((tmp_path / "gs2-big-float64-torch-diffraction.scaled" / "repro.json").read_text())
    r0, r1, c0, c1 = meta["crop"]
    assert (r1 - r0, c1 - c0) == (CROP, CROP) and r0 <= worst["row"] < r1 and c0 <= worst["col"] < c1
    assert meta["groups"] == [worst["group"]] and meta["channel"] == worst["channel"]
    assert meta["local_error"] > meta["tolerance"] and not meta["whole_batch"]
    data = np.load(tmp_path / "gs2-big-float64-torch-diffraction.scaled" / "repro.npz")
    assert data["input/diffraction.amplitude"].shape == data["output/torch"].shape == (1, CROP, CROP, 1)


def test_a_reference_with_gaps_and_its_own_layout_gets_origins_without_a_crash(clean_registry, tmp_path):
    """A reference as a user's Keras model often is: a stage it does not give (decoder.amp), a canvas
    in its own layout (B, M, M), no teacher forcing. The port diverges there (the shapes differ);
    origins run to the end: the stage whose input the reference lacks is not forced and says so,
    numpy gives no opinion on a shape it cannot match, no reproduction is written and why — a
    divergence (exit 1), no error, the candidate blamed."""
    import models_numpy
    from parity.backends import Backend, register
    from parity.inputs.cases import get_case
    from parity.run.engine import RunRequest, run_case
    from parity.run.results import EXIT_DIVERGED
    from parity.stages import TRAIN_STAGES

    class Gappy:
        def __init__(self, model):
            self.model = model

        def forward_train(self, batch):
            return self._own(self.model.forward_train(batch))

        def forward_infer(self, batch):
            return self._own(self.model.forward_infer(batch))

        @staticmethod
        def _own(trace):
            trace.pop("decoder.amp")
            trace["object.canvas"] = trace["object.canvas"][..., 0]
            return trace

    register(Backend("gappy-ref", "numpy", ("cpu",), configure_fn=lambda device: {},
                     build_fn=lambda cfg, w, device="cpu", **kw: Gappy(models_numpy.build(cfg, w, device=device)),
                     stages=tuple(s for s in TRAIN_STAGES if s != "decoder.amp"), capabilities=frozenset()))
    result = run_case(get_case("gs2-big"), RunRequest(dtype="float64", ref="gappy-ref", candidates=("torch",),
                                                      use_golden=False, checkpoints=False, repro_dir=tmp_path))
    assert result.exit_code == EXIT_DIVERGED and not result.errors, result.report()
    stages = {s.stage: s for s in result.comparisons["torch"].stages}
    assert not stages["decoder.amp"].provided and stages["decoder.amp"].message == "not provided by gappy-ref"
    assert result.comparisons["torch"].first_divergence.stage == "object.canvas"
    assert stages["object.patches"].mark == "not forced"
    assert stages["object.patches"].local_note == "its input decoder.amp is not provided by gappy-ref"
    [origin] = result.origins["torch"]
    assert origin["stage"] == "object.canvas" and origin["blame"] == "torch"
    assert "numpy gives no opinion (gappy-ref's object.canvas has shape (8, 78, 78), numpy's (8, 78, 78, 1))" \
        in origin["short"]
    assert origin["repro_why"] == "no minimal reproduction: gappy-ref cannot compute object.canvas from given inputs"
    assert not list(tmp_path.iterdir())
