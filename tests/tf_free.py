"""A Python without TensorFlow, made from this one: the interpreter started with `-S` (no
site-packages) and, on PYTHONPATH, a folder of links to every installed distribution except
TensorFlow and Keras, then the project. `import tensorflow` fails there exactly as on a torch-only
GPU runner, and `importlib.metadata` finds no TensorFlow either."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HIDDEN = ("tensorflow", "keras", "tf_keras", "tensorboard")  # and their dist-info folders


def _hidden(name: str) -> bool:
    stem = name.lower().replace("-", "_")
    return stem.endswith(".pth") or any(stem == h or stem.startswith(h + "_") or stem.startswith(h + ".")
                                        or stem.startswith(h + "-") for h in HIDDEN)


def make(folder: Path) -> dict[str, str]:
    """Link every site-packages entry but TensorFlow's into `folder`; the environment to run in."""
    folder.mkdir(parents=True, exist_ok=True)
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if not _hidden(entry.name):
            (folder / entry.name).symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(folder)])
    return env


def run(env: dict[str, str], *args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -S <args>` in that environment."""
    return subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
