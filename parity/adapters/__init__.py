"""Adapters: turn an existing implementation into a parity backend without rewriting it.

A port rarely has the reference's structure, so an adapter says, stage by stage, where the value
lives in the user's model and how to read it:

- `Tap(stage, "encoder")` — the output of the submodule at that dotted path (a forward hook);
  `pre=True` taps its input instead (a forward pre-hook); `pick=0` takes one element of a tuple;
- `Tap(stage, "mypkg.physics:merge", function=True)` — a module-level function, wrapped for the
  duration of one forward call and restored afterwards;
- `layout="BCHW"` converts channels-first to the trace's channels-last; `squeeze=(1,)` drops an
  extra singleton axis; `transform=fn` any other conversion (e.g. add the channel axis of a
  (B, M, M) canvas), applied last; `inverse=fn` undoes it, so the origins check can put the
  reference's value in the port's place there (teacher forcing);
- `when=lambda cfg: ...` — a tap (or a `Derived`) that exists only for some configs (no canvas at
  gridsize 1); `calls=1` (the default) — how often the tap must fire in one forward call (None:
  at least once; `occurrence` picks which call's value is kept);
- `Derived(stage, fn)` — a stage the model never materialises but that follows from tapped ones
  (e.g. intensity = scaled²), fn(trace, cfg); `infer=False` on a tap or a Derived: the inference
  entry point (`run_infer`) does not reach it;
- `map_weights` — the neutral weights (canonical names, Keras layout) → the user's parameter
  names, with a transposition rule per tensor; reports unmapped and left-over parameters, and
  separately those declared `unused` (no neutral counterpart on purpose); `.check()` raises a
  `MappingError` (adapter wiring, exit 2) listing every misfit.

Wiring is checked before numbers: a tap that did not fire as often as declared, a tap whose
target does not exist or a derived stage whose inputs are missing is a `WiringError` (exit 2)
naming the tap, its target and the likely cause. Stages neither tapped nor derived are declared
not provided: the comparison lists them as "not provided by <name>", never a silent pass.
`torch_backend(...)` and `keras_backend(...)` take the same arguments (taps, derived stages,
`run_infer`, mapping, state, save/load, loss) and return a `parity.backends.Backend` with the same
capabilities (`parity.adapters.model.adapter_backend`); register it
with `parity.backends.register` or through the entry-point group `ptycho_parity.backends`.
"""

from __future__ import annotations

from parity.adapters.keras_model import keras_backend
from parity.adapters.model import AdapterModel, Framework
from parity.adapters.pytorch import torch_backend
from parity.adapters.taps import AdapterSpec, Derived, Tap
from parity.adapters.weights import TRANSPOSE_RULES, MappingError, WeightMapping, map_weights, neutral_weights

__all__ = ["AdapterModel", "AdapterSpec", "Derived", "Framework", "MappingError", "TRANSPOSE_RULES", "Tap", "WeightMapping",
           "keras_backend", "map_weights", "neutral_weights", "torch_backend"]
