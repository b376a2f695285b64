"""Tables, not single examples: every stage of every profile resolves to the bound the tolerance
file states for it (read here straight from the TOML, longest glob by hand), both in the profile
lookup and in what a run actually judged each stage by; and every golden section, tampered, fails
its case naming the key — through the pipeline `parity check` runs."""

from __future__ import annotations

import copy
import fnmatch
import json
import sys

import pytest

from parity.goldens.store import SECTIONS, flatten
from parity.inputs.cases import get_case
from parity.resources import FIXTURES_ROOT
from parity.run.engine import RunRequest, run_case
from parity.run.tolerances import load_profile
from parity.stages import TRAIN_STAGES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOML = tomllib.loads((FIXTURES_ROOT / "tolerances.toml").read_text())
PROFILES = [(device, dtype) for device, tables in TOML["agreement"].items() for dtype in tables]


def stated(device: str, dtype: str, key: str) -> float:
    """The bound the file states for `key`: its own line in [calibrated.device.dtype] (what
    `parity calibrate` measured), else the longest matching glob of [agreement.device.dtype]."""
    calibrated = TOML.get("calibrated", {}).get(device, {}).get(dtype, {})
    if key in calibrated:
        return float(calibrated[key])
    table = TOML["agreement"][device][dtype]
    pattern = max((p for p in table if fnmatch.fnmatchcase(key, p)), key=len)
    value = table[pattern]
    return float(next(iter(value.values())) if isinstance(value, dict) else value)


def test_every_table_is_read():
    assert {("cpu", "float32"), ("cpu", "float64"), ("cuda", "float32"), ("cuda", "float64")} <= set(PROFILES)
    assert set(TRAIN_STAGES) <= set(TOML["calibrated"]["cpu"]["float32"])  # every float32 CPU stage measured


@pytest.mark.parametrize("device, dtype", PROFILES)
def test_every_stage_of_every_profile_resolves_to_the_bound_the_file_states(device, dtype):
    profile = load_profile(device, dtype)
    keys = [*TRAIN_STAGES, "loss", "loss.nll", "loss.mae", "grad.log_scale", "grad.encoder.conv0.kernel",
            "train.loss", "train.log_scale"]
    assert {key: profile.for_stage(key) for key in keys} == {key: stated(device, dtype, key) for key in keys}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_run_judges_each_stage_by_its_own_profiles_bound(dtype):
    """What the run used, stage by stage, for the candidate on the CPU: a lookup that read one
    stage from the other dtype's table fails here."""
    result = run_case(get_case("gs1"), RunRequest(dtype=dtype, ref="numpy", candidates=("torch",), use_golden=False,
                                                  checkpoints=False, reuse=("numpy", "torch")))
    stages = result.comparisons["torch"].stages
    assert [s.stage for s in stages] and all(s.tolerance is not None for s in stages)
    assert {s.stage: s.tolerance for s in stages} == {s.stage: stated("cpu", dtype, s.stage) for s in stages}


def test_every_golden_section_tampered_fails_naming_its_key(tmp_path):
    """One key of each section of gs1's golden moved by half its value: the golden check of a run
    (the pipeline's) names each of them — a check that skipped a whole section would miss one."""
    golden = json.loads((FIXTURES_ROOT / "goldens" / "gs1.json").read_text())
    tampered = copy.deepcopy(golden)
    chosen = {}
    for section in SECTIONS:
        numbers = {k: v for k, v in flatten(golden["summaries"][section]).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        key = min(numbers, key=lambda k: (not (isinstance(numbers[k], float) and abs(numbers[k]) > 1e-3), k))
        chosen[section] = f"{section}.{key}"
        node = tampered["summaries"][section]
        *parents, last = key.split(".")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        value = numbers[key]  # half its value more, or 1 where it is 0 (gs1's offsets are all zeros)
        node[int(last) if isinstance(node, list) else last] = (value * 1.5 if isinstance(value, float) else value + 1) or 1.0
    (tmp_path / "gs1.json").write_text(json.dumps(tampered))
    request = RunRequest(dtype="float64", ref="numpy", candidates=("torch",), goldens_dir=tmp_path,
                         checkpoints=False, reuse=("numpy", "torch"))
    result = run_case(get_case("gs1"), request)
    for name, check in result.golden.items():
        named = {m.key for m in check.mismatches}
        assert set(chosen.values()) <= named, (name, set(chosen.values()) - named)
        assert not check.passed
