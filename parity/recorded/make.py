"""`parity record`: run a reference on cases and write what it computed (parity.recorded.store),
so that another machine — a GPU runner without TensorFlow, a venv that holds only the port — can
check a port against those numbers with `--ref recorded:DIR`."""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from parity.errors import UsageError
from parity.files import write_atomic
from parity.recorded.store import SCHEMA, Record, entry_dir, source_key, step_arrays, write_arrays
from parity.run.training import AdamConfig


def add_record_options(p: argparse.ArgumentParser) -> None:
    """The options of `parity record` besides the case options (parity.cli)."""
    p.add_argument("--ref", default="tensorflow", metavar="BACKEND", help="the reference to record (default: %(default)s)")
    p.add_argument("--dtype", choices=("float32", "float64", "all"), default="all", help="precision (default: %(default)s)")
    p.add_argument("--data", help="any fly001-format NPZ (default: the shipped fixture)")
    p.add_argument("--grad", action="store_true", help="also record the loss and every gradient")
    p.add_argument("--train-steps", type=int, default=0, metavar="K", help="also record K Adam steps")
    p.add_argument("--out", required=True, metavar="DIR", help="the record's folder (new, empty, or a record)")


def record_command(args: argparse.Namespace) -> int:
    """`parity record`: the chosen cases, refused where --out holds files of yours; the summary line."""
    from parity.inputs.casefile import chosen_cases
    from parity.report.dump import iter_dtypes

    cases = chosen_cases(args.case, args.cases, args.case_file)
    out = Path(args.out)
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / "record.json").is_file()):
        raise UsageError(f"--out {out}: holds files that are not a record; name an empty or new folder")
    if args.train_steps < 0:
        raise UsageError(f"--train-steps must be >= 0, got {args.train_steps}")
    dtypes = list(iter_dtypes(args.dtype))
    print(f"parity record: {args.ref} on cpu, {len(cases)} case(s) x {len(dtypes)} dtype(s) into {out}/", flush=True)
    path = record(cases, args.ref, out, dtypes, data=args.data, grad=args.grad, train_steps=args.train_steps,
                  progress=lambda line: print(line, flush=True))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    n = len(cases) * len(dtypes)
    print(f"wrote {path} and {n} entr{'y' if n == 1 else 'ies'} (the record: {size / 1e6:.1f} MB); check a port against it "
          f"with `parity check --ref recorded:{out}`")
    return 0


def record(cases: Sequence, ref: str, out: Path, dtypes: Sequence[str], data: Optional[str | Path] = None,
           grad: bool = False, train_steps: int = 0, adam: AdamConfig = AdamConfig(),
           progress: Callable[[str], None] = lambda line: None) -> Path:
    """Run `ref` on the CPU for each case and dtype and write the record into `out`: both paths,
    the saved → loaded inference path, the loss and gradients (`grad`), K Adam steps
    (`train_steps`), the inputs' digests and the reference's source key; into an earlier record of
    the same reference, the entries are added (or replaced). Returns record.json."""
    from parity.backends import get_backend
    from parity.backends.effective import effective_config
    from parity.inputs.cases import digests_of
    from parity.run.backend_run import require_device

    backend = get_backend(ref).require()
    earlier = _earlier(out, ref, cases, adam)
    flags = require_device({ref: "cpu"})
    out.mkdir(parents=True, exist_ok=True)
    recorded: dict = {}
    for i, case in enumerate(cases, 1):
        for dtype in dtypes:
            progress(f"[{i}/{len(cases)}] {case.name} {dtype}: {ref} on cpu ...")
            cfg, weights, batch = case.inputs(dtype, data=data)
            state = case.state(dtype)
            folder = entry_dir(out, case.name, dtype)
            folder.mkdir(parents=True, exist_ok=True)
            model = backend.build(cfg, weights, device="cpu", **state)
            write_arrays(folder / "train.npz", model.forward_train(batch), compress=True)
            write_arrays(folder / "infer.npz", model.forward_infer(batch), compress=True)
            with tempfile.TemporaryDirectory(prefix="parity-record-") as tmp:
                loaded = backend.load(model.save(Path(tmp) / "model.ckpt"), device="cpu", cfg=cfg)
                write_arrays(folder / "reloaded.npz", loaded.forward_infer(batch), compress=True)
            kept = model.state()
            meta = {"case": case.name, "dtype": dtype, "config": cfg.to_dict(),
                    "digests": digests_of(weights, batch, state), "log_scale": float(kept["log_scale"]),
                    "effective_config": effective_config(model), "weights_source": case.weights_source()}
            if kept.get("probe") is not None:
                write_arrays(folder / "state.npz", {"probe": kept["probe"]})
            if grad:
                losses, grads = model.loss_and_gradients(batch)
                meta["losses"] = losses
                write_arrays(folder / "gradients.npz", {k: g for k, g in grads.items() if g is not None})
            if train_steps:
                fresh = backend.build(cfg, weights, device="cpu", **state)
                steps = {}
                for k, step in enumerate(fresh.train_steps(batch, train_steps, adam)):
                    steps.update(step_arrays(k, step))
                write_arrays(folder / "steps.npz", steps)
                meta["steps"] = train_steps
            write_atomic(folder / "meta.json", json.dumps(meta, indent=1, default=_plain) + "\n")
            recorded.setdefault(case.name, {"config": cfg.to_dict(), "dtypes": []})["dtypes"].append(dtype)
    if earlier is not None:  # entries added to an earlier record of the same reference: it keeps its own
        for name, entry in earlier.info["cases"].items():
            dtypes = recorded.setdefault(name, {"config": entry["config"], "dtypes": []})["dtypes"]
            dtypes[:0] = [d for d in entry["dtypes"] if d not in dtypes]
        grad, train_steps = grad or earlier.info["gradients"], max(train_steps, earlier.info["train_steps"])
    info = {"schema": SCHEMA, "backend": ref, "framework": backend.framework, "version": backend.version(),
            "source_key": source_key(ref), "gradients": grad, "train_steps": train_steps, "adam": adam.to_dict(),
            "data": None if data is None else str(data), "flags": flags, "python": platform.python_version(),
            "machine": platform.machine(), "platform": platform.platform(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "cases": recorded}
    write_atomic(out / "record.json", json.dumps(info, indent=1, default=_plain) + "\n")
    return out / "record.json"


def _earlier(out: Path, ref: str, cases: Sequence, adam: AdamConfig) -> Optional[Record]:
    """The record already in `out`, to add entries to: only one of the same reference, sources,
    Adam and case definitions (else UsageError: its entries and the new ones would disagree)."""
    if not (out / "record.json").is_file():
        return None
    old = Record.open(out)
    why = ("another reference" if old.backend != ref else
           "other sources of the reference" if old.info.get("source_key") != source_key(ref) else
           "another Adam" if old.info.get("adam") != adam.to_dict() else
           next((f"another definition of case {c.name}" for c in cases
                 if c.name in old.info["cases"] and old.info["cases"][c.name]["config"] != c.config.to_dict()), ""))
    if why:
        raise UsageError(f"--out {out}: holds a record of {why}; record into a new folder")
    return old


def _plain(value):
    """numpy scalars in a model's effective config, as JSON numbers."""
    return value.item() if hasattr(value, "item") else str(value)
