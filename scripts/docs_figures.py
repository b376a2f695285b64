"""Regenerate the figures of the documentation (docs/figures/*.png), bit for bit, from the shipped
fixture: each one is what `parity check` draws on a fault from the catalogue (`make docs-figures`).

    python scripts/docs_figures.py [--out DIR] [--only FIGURE]    (default: docs/figures, every figure)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (the faults injected into the torch port, the extra `parity check` options,
#  {figure parity check draws under <out>/<case>/: its name in docs/figures})
SCENARIOS = [
    (("merge-translation-sign",), (), {"canvas_float64.png": "forward-canvas.png",
                                       "golden_float64.png": "golden.png"}),
    (("missing-fftshift",), (), {"diffraction_float64.png": "forward-diffraction.png"}),
    (("log-scale-not-restored",), (), {"checkpoint_float64.png": "checkpoint.png"}),
    (("loss-stirling-term",), ("--grad",), {"gradients_float64.png": "gradients.png"}),
    (("adam-epsilon-1e-8",), ("--train-steps", "3"), {"training_float64.png": "training.png"}),
    (("avg-pool-for-max-pool", "probe-conjugated"), (), {
        "origin_torch_encoder_out_float64.png": "origin-encoder.png",
        "origin_torch_probe_illuminated_float64.png": "origin-probe.png",
        "errors_float64.png": "errors.png"}),
]
CASE = "gs2-big"
NOISE = "noise.png"  # the measured noise per stage (parity.calibrate.figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--only", metavar="FIGURE", help="only the scenario that draws this figure (e.g. checkpoint.png)")
    args = parser.parse_args(argv)
    scenarios = [s for s in SCENARIOS if args.only is None or args.only in s[2].values()]
    if not scenarios and args.only != NOISE:
        print(f"error: no scenario draws {args.only}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from parity.cli import main as parity
    from parity.faults.catalogue import get_fault

    args.out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, NOISE):  # from the shipped tolerance file's calibration, no run needed
        from parity.calibrate.figure import draw_noise

        print(f"  {draw_noise(args.out / NOISE)}")
        if args.only == NOISE:
            return 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (faults, options, figures) in enumerate(scenarios):
            out = Path(tmp) / str(i)
            with contextlib.ExitStack() as stack:
                for fault in faults:
                    stack.enter_context(get_fault(fault).inject())
                with contextlib.redirect_stdout(io.StringIO()):
                    code = parity(["check", "--case", CASE, "--dtype", "float64", "--out", str(out),
                                   "--repro", str(out / "repro"), *options])
            print(f"{' + '.join(faults)}: parity check exit {code}")
            for drawn, name in figures.items():
                if args.only is not None and name != args.only:
                    continue
                source = out / CASE / drawn
                if not source.is_file():
                    print(f"error: {' + '.join(faults)} drew no {drawn}", file=sys.stderr)
                    return 1
                shutil.copyfile(source, args.out / name)
                print(f"  {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
