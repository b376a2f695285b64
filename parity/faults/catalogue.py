"""The fault catalogue: porting bugs seen in PtychoPINN's TensorFlow → PyTorch history, each
injected from outside into one backend (attributes patched for the duration of a `with`, the
models themselves have no switch), and what the harness must say about it: the first stage it
blames and, where the numpy oracle covers that stage, the backend it blames.

`parity.faults.evaluate` runs them; `parity faults` prints the table (`--markdown` for the README);
`tests/test_parity_faults.py` asserts every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ContextManager, Optional

from parity.faults.injections import (
    adam_epsilon_torch_default, amp_activation_silu, avg_pool_for_max_pool, canvas_without_jitter_buffer,
    channels_axes_confused, fft_norm_backward, heads_swapped, intensity_scale_inverted, kernel_axes_swapped,
    log_scale_frozen, log_scale_not_restored, loss_stirling_term, loss_sum_reduction, mae_weight_ignored,
    merge_translation_sign, merge_without_centre_mask, merge_without_epsilon, missing_fftshift,
    object_big_flipped, offsets_xy_swapped, probe_conjugated, probe_mask_on, uint16_squared_before_cast)

DTYPE = "float64"  # faults are judged where the tolerance is tightest
TRAIN_STEPS = 3  # training faults: enough steps for one to show, few enough to stay quick


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    case: str
    expected_stage: str
    expected_blame: Optional[str]  # None: a data fault (both backends read the same inputs)
    inject: Callable[[], ContextManager]
    where: str = "forward"  # forward | checkpoint | golden | gradients | training (the check that must catch it)

    def expected_where(self, ref_trains: bool = True) -> str:
        """The check that must catch it (the gradient goldens, for a reference without gradients)."""
        return "golden" if self.where == "gradients" and not ref_trains else self.where

    @property
    def in_gate(self) -> bool:
        """The gate tier runs the forward, checkpoint and data faults; the gradient and Adam-step
        faults (each a gradient or training run of its own) are the full tier's."""
        return self.where not in ("gradients", "training")


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
