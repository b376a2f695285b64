"""Faults injected together, and where the harness must say each was born (docs/design.md §12):
two independent faults at once (a network bug and a physics bug, as in a real port), and a fault
born under its tolerance whose error the model amplifies over it downstream. Run by
`parity.faults.evaluate.find_origins`; `tests/test_parity_origins.py` asserts every origin of each.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from parity.faults.catalogue import get_fault
from parity.faults.injections import _torch, patched


def encoder_output_scaled():
    _, _, network, _ = _torch()
    encoder = network.Encoder.forward
    return patched(network.Encoder, "forward", lambda self, x: encoder(self, x) * (1 + 9e-13))


@dataclass(frozen=True)
class OriginCase:
    """Faults injected together, and the origins the harness must find in one run, in forward
    order, each (stage, side numpy blames)."""

    name: str
    description: str
    case: str
    faults: tuple  # names in CATALOGUE, or injections (callables returning a context manager)
    expected_origins: tuple

    @contextlib.contextmanager
    def inject(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for fault in self.faults:
                stack.enter_context(get_fault(fault).inject() if isinstance(fault, str) else fault())
            yield


ORIGIN_CASES: list[OriginCase] = [
    OriginCase("avg-pool+probe-conjugated", "average pooling in the encoder and the probe conjugated",
               "gs2-big", ("avg-pool-for-max-pool", "probe-conjugated"),
               (("encoder.out", "torch"), ("probe.illuminated", "torch"))),
    OriginCase("amp-activation-silu+missing-fftshift", "silu amplitude activation and no fftshift",
               "gs2-big", ("amp-activation-silu", "missing-fftshift"),
               (("decoder.amp", "torch"), ("diffraction.amplitude", "torch"))),
    OriginCase("heads-swapped+merge-translation-sign", "decoder heads swapped and the merge shifted the wrong way",
               "gs2-big", ("heads-swapped", "merge-translation-sign"),
               (("decoder.amp", "torch"), ("decoder.phase", "torch"), ("object.canvas", "torch"))),
    OriginCase("encoder-off-by-9e-13", "the encoder's output off by 9e-13 relative: under float64's tolerance "
               "(1e-12), amplified over it by object.patches", "gs2-big", (encoder_output_scaled,),
               (("encoder.out", "torch"),)),
]
