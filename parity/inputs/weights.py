"""Neutral weights (docs/design.md §4): canonical names → arrays in Keras layout (kernel kh, kw, in, out).

Both backends load by these names, never by creation order. The network layout is defined here
once (`encoder_filters`, `decoder_filters`, `weight_specs`) so that both backends build the same
layers from the same numbers.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from parity.config import ForwardConfig

KERNEL = 3  # every conv is 3x3 'same'
PAD_OBJECT_OUTER = 4  # pad_object: the last 4 feature channels feed the probe_big border branch


class WeightError(ValueError):
    """A weight dict does not match the network of a config; lists every problem at once."""


def encoder_filters(cfg: ForwardConfig) -> list[int]:
    """Filters of the encoder's conv-conv-pool blocks (N=64: nfs·[32,64,128])."""
    base = {64: [32, 64, 128], 128: [16, 32, 64, 128], 256: [8, 16, 32, 64, 128]}[cfg.N]
    return [cfg.n_filters_scale * f for f in base]


def decoder_filters(cfg: ForwardConfig) -> list[int]:
    """Filters of each decoder's conv-conv-upsample blocks (N=64: nfs·[64,32])."""
    base = {64: [64, 32], 128: [128, 64, 32], 256: [256, 128, 64, 32]}[cfg.N]
    return [cfg.n_filters_scale * f for f in base]


def head_up_filters(cfg: ForwardConfig) -> int:
    """Filters of the last stage's up block: nfs · (2048 // N)."""
    return cfg.n_filters_scale * (2048 // cfg.N)


def head_branches(cfg: ForwardConfig) -> tuple[bool, bool]:
    """(uses conv1, uses up+conv2) for the decoder last stage (docs/design.md §2.3)."""
    if cfg.pad_object:
        return True, cfg.probe_big
    return False, True


def weight_specs(cfg: ForwardConfig) -> dict[str, tuple[int, ...]]:
    """Canonical name → shape for every kernel and bias, in forward order."""
    specs: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cin: int, cout: int) -> None:
        specs[f"{name}.kernel"] = (KERNEL, KERNEL, cin, cout)
        specs[f"{name}.bias"] = (cout,)

    cin = cfg.C
    for i, f in enumerate(encoder_filters(cfg)):
        conv(f"encoder.block{i}.conv0", cin, f)
        conv(f"encoder.block{i}.conv1", f, f)
        cin = f
    features_in = cin
    use_conv1, use_up = head_branches(cfg)
    for dec in ("decoder_amp", "decoder_phase"):
        cin = features_in
        for i, f in enumerate(decoder_filters(cfg)):
            conv(f"{dec}.block{i}.conv0", cin, f)
            conv(f"{dec}.block{i}.conv1", f, f)
            cin = f
        if use_conv1:
            conv(f"{dec}.head.conv1", cin - PAD_OBJECT_OUTER, cfg.Co)
        if use_up:
            up_in = PAD_OBJECT_OUTER if cfg.pad_object else cin
            up = head_up_filters(cfg)
            conv(f"{dec}.head.up.conv0", up_in, up)
            conv(f"{dec}.head.up.conv1", up, up)
            conv(f"{dec}.head.conv2", up, cfg.Co)
    return specs


def parameter_count(weights_or_specs: Mapping) -> int:
    total = 0
    for v in weights_or_specs.values():
        shape = v if isinstance(v, tuple) else np.shape(v)
        total += int(np.prod(shape))
    return total


WEIGHT_SCHEMES = ("informative", "glorot")
DEFAULT_SCHEME = "informative"
# The data contract normalises every pattern to Σ_hw X² = (N/2)², i.e. an RMS of 1/2 per pixel.
INPUT_RMS = 0.5
INFORMATIVE_BIAS = 0.1  # biases ~ U(−0.1, 0.1): about a tenth of the unit activation RMS


def is_head_conv(name: str) -> bool:
    """The convs of a decoder's last stage with no relu after them (conv1, conv2)."""
    return ".head.conv" in name


def _kernel_limit(name: str, shape: tuple[int, ...], scheme: str) -> float:
    """Half-width of the uniform kernel distribution (variance = limit² / 3)."""
    kh, kw, cin, cout = shape
    fan_in, fan_out = kh * kw * cin, kh * kw * cout
    if scheme == "glorot":
        return float(np.sqrt(6.0 / (fan_in + fan_out)))
    if is_head_conv(name):
        variance = 1.0 / fan_in  # LeCun: linear conv, keeps the unit RMS into the activation
        if name.startswith("decoder_phase."):
            variance /= (2 * np.pi) ** 2  # π·tanh has slope π: phase RMS ≈ 1/2 rad, far from ±π
    else:
        variance = 2.0 / fan_in  # He: a relu halves the second moment, the gain 2 restores it
        if name == "encoder.block0.conv0.kernel":
            variance /= INPUT_RMS ** 2  # lift the contract's input RMS of 1/2 to 1
    return float(np.sqrt(3.0 * variance))


def init_weights(cfg: ForwardConfig, seed: int, dtype: str = "float32",
                 scheme: str = DEFAULT_SCHEME) -> dict[str, np.ndarray]:
    """Weights of `cfg`'s network drawn in forward order (kernel, then bias, per conv) from
    RandomState(seed), a stream numpy keeps frozen, so a seed gives the same weights on every
    numpy version. Values are drawn in float64 and cast once to `dtype`. Neither scheme looks
    at any data.

    - ``glorot``: what upstream Keras does (Glorot-uniform kernels, zero biases). Faithful, but
      a poor test input: the output hardly depends on the input and no bias is exercised.
    - ``informative`` (the cases' scheme): kernels uniform with variance gain²/fan_in, chosen so
      that every layer's activations have an RMS near 1 — neither vanishing nor saturating:
      gain² = 2 (He) for every conv followed by a relu, since a relu keeps half the second
      moment; the first conv also divides by the input RMS of 1/2 that the normalisation
      contract guarantees; gain² = 1 (LeCun) for the amplitude decoder's last-stage convs, which
      feed its activation (sigmoid, ...) a pre-activation of RMS ≈ 1, across its sensitive
      range; gain² = 1/(2π)² for the phase decoder's: π·tanh has slope π at 0, so the phase
      gets an RMS of about 1/2 rad — a weak phase object, spanning several radians over a patch
      without piling up at ±π where tanh saturates. (A larger phase gain also costs float32
      parity: the absolute phase error, which every patch inherits, grows with it.)
      Biases ~ U(−0.1, 0.1): non-zero so that a bias bug shows, small against the unit
      activations so that the output is driven by the input.
    """
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(f"weight scheme must be one of {WEIGHT_SCHEMES}, got {scheme!r}")
    rng = np.random.RandomState(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in weight_specs(cfg).items():
        if name.endswith(".kernel"):
            limit = _kernel_limit(name, shape, scheme)
            out[name] = rng.uniform(-limit, limit, size=shape).astype(dtype)
        elif scheme == "glorot":
            out[name] = np.zeros(shape, dtype=dtype)
        else:
            out[name] = rng.uniform(-INFORMATIVE_BIAS, INFORMATIVE_BIAS, size=shape).astype(dtype)
    return out


def validate_weights(cfg: ForwardConfig, weights: Mapping[str, np.ndarray]) -> None:
    """Raise `WeightError` listing every missing, extra and mis-shaped key at once."""
    specs = weight_specs(cfg)
    missing = [k for k in specs if k not in weights]
    extra = sorted(k for k in weights if k not in specs)
    misshaped = [f"{k}: expected {specs[k]}, got {tuple(np.shape(weights[k]))}"
                 for k in specs if k in weights and tuple(np.shape(weights[k])) != specs[k]]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {', '.join(missing)}")
    if extra:
        problems.append(f"extra {len(extra)}: {', '.join(extra)}")
    if misshaped:
        problems.append(f"mis-shaped {len(misshaped)}: {'; '.join(misshaped)}")
    if problems:
        raise WeightError("weights do not match the network of this config — " + " | ".join(problems))
    dtypes = {np.asarray(v).dtype for v in weights.values()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (np.float32, np.float64):
        raise WeightError(f"weights must all be float32 or all float64, got {sorted(map(str, dtypes))}")


def weights_dtype(weights: Mapping[str, np.ndarray]) -> str:
    dtypes = {str(np.asarray(v).dtype) for v in weights.values()}
    if len(dtypes) != 1:
        raise WeightError(f"weights mix dtypes {sorted(dtypes)}; cast them all to one")
    return dtypes.pop()


def save_weights(path: str | Path, weights: Mapping[str, np.ndarray]) -> None:
    np.savez(path, **{k: np.asarray(v) for k, v in weights.items()})


def load_weights(path: str | Path, cfg: ForwardConfig | None = None) -> dict[str, np.ndarray]:
    """Load a weight npz; with `cfg`, validate it against that config's network."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            weights = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise WeightError(f"{path}: not a readable weight NPZ ({exc})") from None
    if cfg is not None:
        try:
            validate_weights(cfg, weights)
        except WeightError as exc:
            raise WeightError(f"{path}: {exc}") from None
    return weights


def digest(weights: Mapping[str, np.ndarray]) -> str:
    """sha256 over sorted names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for name in sorted(weights):
        arr = np.ascontiguousarray(weights[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()
