"""The fault catalogue: porting bugs seen in PtychoPINN's TensorFlow → PyTorch history, each
injected from outside into one backend (attributes patched for the duration of a `with`, the
models themselves have no switch), and what the harness must say about it: the first stage it
blames and, where the numpy oracle covers that stage, the backend it blames.

`parity faults` runs the catalogue and prints the table (`--markdown` for the README);
`tests/test_parity_faults.py` asserts every row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Optional

import numpy as np

DTYPE = "float64"  # faults are judged where the tolerance is tightest
TRAIN_STEPS = 3  # training faults: enough steps for one to show, few enough to stay quick


@contextlib.contextmanager
def patched(target, name: str, value) -> Iterator[None]:
    """setattr for the duration of the block, restored whatever happens."""
    original = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, original)


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    case: str
    expected_stage: str
    expected_blame: Optional[str]  # None: a data fault (both backends read the same inputs)
    inject: Callable[[], ContextManager]
    where: str = "forward"  # forward | checkpoint | golden | gradients | training (the check that must catch it)


@dataclass
class Observation:
    fault: str
    caught: bool
    where: str  # which check caught it
    stage: Optional[str]
    blame: Optional[str]
    rel_error: Optional[float]
    detail: str

    @property
    def not_applicable(self) -> bool:
        """The check that catches this fault cannot run with this reference (numpy cannot train)."""
        return self.where == "not run"

    def matches(self, fault: Fault) -> bool:
        where = fault.where
        if self.where == "golden" and fault.where == "gradients":  # a reference that cannot train
            where = "golden"
        return (self.caught and self.where == where and self.stage == fault.expected_stage
                and (fault.expected_blame is None or self.blame == fault.expected_blame))


# -- injections (all into the torch port, the side under test; fault 13 is on the data side) ----

def _torch():
    import models_torch
    import models_torch.model as model
    import models_torch.network as network
    import models_torch.physics as physics

    return models_torch, model, network, physics


def _wrap(module, name: str, make: Callable[[Callable], Callable]) -> ContextManager:
    return patched(module, name, make(getattr(module, name)))


def merge_translation_sign():
    _, _, _, physics = _torch()
    return _wrap(physics, "object_canvas", lambda f: lambda patches, offsets, cfg: f(patches, -offsets, cfg))


def offsets_xy_swapped():
    _, model, _, _ = _torch()
    return _wrap(model.ForwardModel, "_object_path", lambda f: lambda self, batch: f(
        self, dataclasses.replace(batch, offsets=np.ascontiguousarray(batch.offsets[:, :, ::-1, :]))))


def canvas_without_jitter_buffer():
    _, _, _, physics = _torch()
    return _wrap(physics, "object_canvas", lambda f: lambda patches, offsets, cfg: f(
        patches, offsets, cfg.replace(max_position_jitter=0)))


def merge_without_epsilon():
    _, _, _, physics = _torch()
    return patched(physics, "MERGE_EPS", 0.0)


def merge_without_centre_mask():
    import torch

    _, _, _, physics = _torch()
    return patched(physics, "centre_window_mask",
                   lambda N, dtype, device=None: torch.ones((N, N), dtype=dtype, device=device))


def missing_fftshift():
    import torch

    _, _, _, physics = _torch()
    return _wrap(physics, "diffraction_amplitude", lambda f: lambda psi: torch.fft.ifftshift(f(psi), dim=(1, 2)))


def fft_norm_backward():
    _, _, _, physics = _torch()
    return _wrap(physics, "diffraction_amplitude", lambda f: lambda psi: f(psi) * float(np.sqrt(psi.shape[1] * psi.shape[2])))


def intensity_scale_inverted():
    _, _, _, physics = _torch()
    return _wrap(physics, "scale_diffraction", lambda f: lambda amplitude, log_scale: f(amplitude, -log_scale))


def log_scale_not_restored():
    package, _, _, _ = _torch()

    def make(load):
        def forgetful(path, device="cpu"):
            import torch

            loaded = load(path, device=device)
            with torch.no_grad():  # log_scale is a trainable parameter
                loaded.log_scale.fill_(0.0)
            return loaded
        return forgetful

    return _wrap(package, "load", make)


def amp_activation_silu():
    import torch.nn.functional as F

    _, _, network, _ = _torch()
    return _wrap(network, "amp_activation", lambda f: lambda name: F.silu if name == "sigmoid" else f(name))


def kernel_axes_swapped():
    import torch

    _, _, network, _ = _torch()

    def make(init):
        def init_swapped(self, weights, name, relu, dtype):
            init(self, weights, name, relu, dtype)
            with torch.no_grad():  # (out, in, kw, kh): the kernel's two spatial axes swapped
                self.conv.weight.copy_(self.conv.weight.transpose(2, 3).clone())
        return init_swapped

    return _wrap(network.Conv3x3, "__init__", make)


def avg_pool_for_max_pool():
    import torch.nn.functional as F

    _, _, network, _ = _torch()

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        return F.avg_pool2d(x, 2)

    return patched(network.ConvPoolBlock, "forward", forward)


def channels_axes_confused():
    _, model, _, _ = _torch()
    return patched(model, "_channels_first", lambda x: x.permute(0, 3, 2, 1))  # (B,C,W,H), rows ↔ columns


def probe_conjugated():
    _, _, _, physics = _torch()
    return _wrap(physics, "illuminate", lambda f: lambda extracted, probe, mask: f(extracted, probe.conj(), mask))


def probe_mask_on():
    import torch

    from parity.data import hard_probe_mask

    _, _, _, physics = _torch()

    def make(illuminate):
        def masked(extracted, probe, mask):
            if mask is None:
                mask = torch.tensor(hard_probe_mask(probe.shape[0]), dtype=probe.real.dtype, device=probe.device)
            return illuminate(extracted, probe, mask)
        return masked

    return _wrap(physics, "illuminate", make)


def object_big_flipped():
    package, _, _, _ = _torch()
    return _wrap(package, "build", lambda f: lambda cfg, weights, **kw: f(
        cfg.replace(object_big=not cfg.object_big), weights, **kw))


def heads_swapped():
    package, _, _, _ = _torch()

    def make(build):
        def swapped(cfg, weights, **kw):
            model = build(cfg, weights, **kw)
            model.decoder_amp.head, model.decoder_phase.head = model.decoder_phase.head, model.decoder_amp.head
            return model
        return swapped

    return _wrap(package, "build", make)


@contextlib.contextmanager
def uint16_squared_before_cast():
    """The loader squares raw uint16 counts in their own dtype (wrapping above 255) before the
    float64 cast. Data side: both backends read the same wrong inputs."""
    from parity import cases, data

    def loader(path, key, raw):
        if np.issubdtype(raw.dtype, np.integer):
            squared = (raw * raw).astype(np.float64)  # the bug: raw * raw overflows in uint16
            return np.sqrt(np.sqrt(squared)), True
        return honest(path, key, raw)

    honest = data._diffraction_amplitude
    cases._load.cache_clear()
    try:
        with patched(data, "_diffraction_amplitude", loader):
            yield
    finally:
        cases._load.cache_clear()


# -- training faults (issue: the port must also learn like the reference) ------------------------

def _torch_training():
    import models_torch.losses as losses
    import models_torch.training as training

    return losses, training


def loss_stirling_term():
    """The full Poisson log-likelihood: + obs·log obs − obs + ½·log(2π·obs) where obs > 1 (what
    torch.nn.PoissonNLLLoss(full=True) adds)."""
    import math

    import torch

    losses, _ = _torch_training()

    def with_stirling(pred, obs):
        stirling = obs * torch.log(obs) - obs + 0.5 * torch.log(2 * math.pi * obs)
        return torch.mean(pred - obs * torch.log(pred) + torch.where(obs > 1, stirling, torch.zeros_like(obs)))

    return patched(losses, "poisson_nll", with_stirling)


def loss_sum_reduction():
    import torch

    losses, _ = _torch_training()
    return patched(losses, "poisson_nll", lambda pred, obs: torch.sum(pred - obs * torch.log(pred)))


def adam_epsilon_torch_default():
    _, training = _torch_training()

    def make(init):
        def init_eps(self, cfg):
            init(self, dataclasses.replace(cfg, epsilon=1e-8))
        return init_eps

    return _wrap(training.Adam, "__init__", make)


def log_scale_frozen():
    package, _, _, _ = _torch()

    def make(build):
        def frozen(cfg, weights, **kw):
            model = build(cfg, weights, **kw)
            model.log_scale.requires_grad_(False)
            return model
        return frozen

    return _wrap(package, "build", make)


def mae_weight_ignored():
    losses, _ = _torch_training()

    def make(total):
        def nll_only(trace, cfg):
            return total(trace, cfg.replace(mae_weight=0.0))
        return nll_only

    return _wrap(losses, "losses", make)


CATALOGUE: list[Fault] = [
    Fault("merge-translation-sign", "merge translates patches by +offset instead of −offset", "gs2-big",
          "object.canvas", "torch", merge_translation_sign),
    Fault("offsets-xy-swapped", "x and y swapped when reading the offsets", "gs2-big",
          "input.offsets", "torch", offsets_xy_swapped),
    Fault("canvas-no-jitter-buffer", "canvas of N + (gridsize−1)·offset (68) without the jitter buffer (78)",
          "gs2-big", "object.canvas", "torch", canvas_without_jitter_buffer),
    Fault("merge-no-epsilon", "merge normaliser Σ masks without the + 0.001", "gs2-big",
          "object.canvas", "torch", merge_without_epsilon),
    Fault("merge-no-centre-mask", "merge normaliser counts whole patches, not their central window",
          "gs2-big", "object.canvas", "torch", merge_without_centre_mask),
    Fault("missing-fftshift", "diffraction amplitude not fftshifted", "gs2-big",
          "diffraction.amplitude", "torch", missing_fftshift),
    Fault("fft-norm-backward", "FFT normalisation 'backward' instead of orthonormal", "gs2-big",
          "diffraction.amplitude", "torch", fft_norm_backward),
    Fault("intensity-scale-inverted", "diffraction scaled by exp(−log_scale) instead of exp(log_scale)",
          "gs2-big", "diffraction.scaled", "torch", intensity_scale_inverted),
    Fault("log-scale-not-restored", "log_scale not restored on load", "gs2-big",
          "scaled_input", "torch", log_scale_not_restored, where="checkpoint"),
    Fault("amp-activation-silu", "amplitude activation silu instead of sigmoid", "gs2-big",
          "decoder.amp", "torch", amp_activation_silu),
    Fault("kernel-axes-swapped", "conv kernels transposed with kh and kw swapped", "gs2-big",
          "encoder.out", "torch", kernel_axes_swapped),
    Fault("channels-axes-confused", "channels-last → channels-first permuted as (0, 3, 2, 1)", "gs2-big",
          "encoder.out", "torch", channels_axes_confused),
    Fault("probe-conjugated", "probe conjugated in the illumination", "gs2-big",
          "probe.illuminated", "torch", probe_conjugated),
    Fault("probe-mask-on", "hard probe mask applied where the reference has probe_mask off", "gs2-big",
          "probe.illuminated", "torch", probe_mask_on),
    Fault("object-big-flipped", "object_big default flipped on one side (gridsize 1, so the weights fit)",
          "gs1", "object.canvas", "torch", object_big_flipped),
    Fault("uint16-squared-before-cast", "uint16 counts squared in their own dtype before the float64 cast",
          "gs2-big", "input digests", None, uint16_squared_before_cast, where="golden"),
    Fault("heads-swapped", "amplitude and phase last stages swapped between the decoders", "gs2-big",
          "decoder.amp", "torch", heads_swapped),
    Fault("avg-pool-for-max-pool", "average pooling where the reference max-pools", "gs2-big",
          "encoder.out", "torch", avg_pool_for_max_pool),
    Fault("loss-stirling-term", "Poisson NLL with the Stirling term (the full log-likelihood)", "gs2-big",
          "loss", "torch", loss_stirling_term, where="gradients"),
    Fault("loss-sum-reduction", "Poisson NLL summed instead of averaged over the elements", "gs2-big",
          "loss", "torch", loss_sum_reduction, where="gradients"),
    Fault("mae-weight-ignored", "MAE term's weight ignored (NLL alone) where mae_weight = 1", "gs2-big-mae",
          "loss", "torch", mae_weight_ignored, where="gradients"),
    Fault("log-scale-frozen", "log_scale not trainable (no gradient, never updated)", "gs2-big",
          "grad.log_scale", "torch", log_scale_frozen, where="gradients"),
    Fault("adam-epsilon-1e-8", "Adam epsilon 1e-8 (torch's default) instead of Keras' 1e-7", "gs2-big",
          "step 1", None, adam_epsilon_torch_default, where="training"),
]


def get_fault(name: str) -> Fault:
    for fault in CATALOGUE:
        if fault.name == name:
            return fault
    raise KeyError(f"unknown fault {name!r}; known: {', '.join(f.name for f in CATALOGUE)}")


# -- evaluation ---------------------------------------------------------------------------------

def uint16_fixture(directory: Path) -> Path:
    """The shipped fixture with its diffraction as raw uint16 counts (amplitude², exact)."""
    from parity.fixture import FIXTURE_PATH, write_npz_reproducibly

    with np.load(FIXTURE_PATH) as npz:
        arrays = {k: npz[k] for k in npz.files}
    counts = np.round(arrays["diffraction"].astype(np.float64) ** 2)
    assert counts.max() < 65536
    arrays["diffraction"] = counts.astype(np.uint16)
    path = Path(directory) / "fly001_small_uint16.npz"
    write_npz_reproducibly(path, arrays)
    return path


def _evaluate_data_fault(fault: Fault, ref: str) -> Observation:
    """Golden made by `ref` (float64, CPU) from the correct loader on raw counts, then the faulty
    loader's inputs compared with it: the digests must say which inputs changed."""
    from parity.cases import get_case
    from parity.engine import case_digests, golden_of, run_backend
    from parity.goldens import compare_golden, load_golden_profile

    case = get_case(fault.case)
    with tempfile.TemporaryDirectory(prefix="parity-fault-") as tmp:
        data = uint16_fixture(Path(tmp))
        golden = golden_of(run_backend(case, ref, "cpu", DTYPE, data=data), case, data)
        with fault.inject():
            digests = case_digests(case, DTYPE, data)
        result = compare_golden(golden, golden["summaries"], digests, DTYPE, load_golden_profile("cpu", DTYPE),
                                run="data")
    caught = bool(result.inputs_changed)
    return Observation(fault.name, caught, "golden", "input digests" if caught else None, None, None,
                       f"inputs changed: {', '.join(result.inputs_changed)}" if caught else "digests match")


def evaluate(fault: Fault, ref: str = "tensorflow") -> Observation:
    """Run the fault's case with the fault injected into the port, compared with `ref`; report
    what the harness caught first (the data fault: against a golden `ref` makes)."""
    from parity.cases import get_case
    from parity.engine import run_case

    if fault.where == "golden":
        return _evaluate_data_fault(fault, ref)
    if fault.where in ("gradients", "training") and not _trains(ref, fault.case):
        return _evaluate_without_trainer(fault, ref)
    with fault.inject():
        # the reference is never patched: its model and traces come from the process's cache
        result = run_case(get_case(fault.case), device="cpu", dtype=DTYPE, use_golden=False,
                          checkpoints=fault.where == "checkpoint", grad=fault.where == "gradients",
                          train_steps=TRAIN_STEPS if fault.where == "training" else 0, ref=ref, reuse=(ref,))
    first = result.comparison.first_divergence
    if first is not None:
        blame = (result.arbitration or {}).get("blame")
        # no relative error for a shape or NaN mismatch: its message says what differs
        return Observation(fault.name, True, "forward", first.stage, blame, first.rel_error,
                           first.message if first.rel_error is None else
                           (result.arbitration or {}).get("verdict", first.message))
    for check in result.checkpoints:
        if not check.passed:
            failed = check.comparison.first_divergence
            return Observation(fault.name, True, "checkpoint", check.first_stage, check.saved,
                               failed.rel_error, check.describe())
    for check in result.gradients.values():
        if not check.passed:
            failed = check.first_divergence
            return Observation(fault.name, True, "gradients", failed.stage, (check.blame or {}).get("blame"),
                               failed.rel_error, check.describe())
    for check in result.training.values():
        if not check.passed:
            step, failed = check.first_divergence
            # the step is what a catalogue entry predicts; the tensor is named in the detail
            return Observation(fault.name, True, "training", f"step {step}", None, failed.rel_error,
                               f"{check.describe()} (tensor {failed.stage})")
    return Observation(fault.name, False, "", None, None, None, "not caught")


def _trains(ref: str, case: str) -> bool:
    from parity.cache import cached_run
    from parity.cases import get_case
    from parity.engine import _trainable

    return _trainable(cached_run(get_case(case), ref, "cpu", DTYPE, None).model)


def _golden_stage(key: str) -> str:
    """A golden key of the gradient summary as the stage a gradient comparison names:
    `gradients.loss.nll` → `loss`, `gradients.grad_norm.log_scale` → `grad.log_scale`."""
    parts = key.split(".")
    if len(parts) >= 3 and parts[0] == "gradients" and parts[1] == "loss":
        return "loss"
    if len(parts) >= 3 and parts[0] == "gradients" and parts[1] == "grad_norm":
        return "grad." + ".".join(parts[2:])
    return key


def _evaluate_without_trainer(fault: Fault, ref: str) -> Observation:
    """A reference that computes no gradients (numpy) cannot be compared with the port's; the
    port's loss terms and gradient norms are judged by the golden (made by the TensorFlow
    reference). Adam steps have no such judge: that fault is not applicable here."""
    from parity.cases import get_case
    from parity.engine import run_case

    if fault.where == "training":
        return Observation(fault.name, False, "not run", None, None, None,
                           f"the reference {ref} cannot train: Adam steps need --ref tensorflow "
                           f"(or the port on another device, compared with itself on the CPU)")
    with fault.inject():
        result = run_case(get_case(fault.case), device="cpu", dtype=DTYPE, checkpoints=False, grad=True,
                          ref=ref, reuse=(ref,))
    for name, golden in result.golden.items():
        if not golden.passed and golden.mismatches:
            # the loss comes first, as in a gradient comparison's backward order
            first = min(golden.mismatches, key=lambda m: _golden_stage(m.key) != "loss")
            return Observation(fault.name, True, "golden", _golden_stage(first.key), name, first.difference,
                               first.row().strip())
    return Observation(fault.name, False, "", None, None, None, "not caught")


def format_table(rows: list[tuple[Fault, Observation]], markdown: bool) -> str:
    header = ("fault", "case", "caught by", "stage blamed", "side blamed", "rel. error at that stage", "as expected")
    body = []
    for fault, obs in rows:
        side = obs.blame or ("— (both: data)" if obs.where == "golden" else "—")
        err = (f"{obs.rel_error:.2e}" if obs.rel_error is not None
               else obs.detail if obs.where == "forward" else "—")
        body.append((fault.name, fault.case, obs.where or "nothing", obs.stage or "—", side, err,
                     "yes" if obs.matches(fault) else "n/a: " + obs.detail if obs.not_applicable else "NO"))
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(f"`{c}`" if i in (0, 3) and c != "—" else c for i, c in enumerate(r)) + " |"
                  for r in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    fmt = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, body)])
