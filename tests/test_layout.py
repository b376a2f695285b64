"""Structural promises of the layout (README): a numpy-only core and two mirrored backends."""

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.processes
def test_core_and_numpy_backend_never_import_a_framework_at_top_level():
    core = [p.relative_to(ROOT).with_suffix("") for p in sorted((ROOT / "parity").rglob("*.py")) if p.stem != "__main__"]
    modules = [".".join(p.parts[:-1] if p.name == "__init__" else p.parts) for p in core]  # subpackages too
    assert "parity.adapters.pytorch" in modules and "parity.run.checks.forward" in modules
    modules += [f"models_numpy.{p.stem}" for p in sorted((ROOT / "models_numpy").glob("*.py"))]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(k for k in ('tensorflow', 'torch', 'keras') if k in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.tensorflow
def test_backends_mirror_each_other():
    def py_files(pkg):
        return sorted(p.name for p in (ROOT / pkg).glob("*.py"))

    assert py_files("models_tf") == py_files("models_torch")
    # numpy has no autodiff: no training module (its losses are the loss's third opinion)
    assert py_files("models_numpy") == [f for f in py_files("models_tf") if f != "training.py"]
    import models_tf.network, models_tf.physics, models_tf.model, models_tf.losses, models_tf.training  # noqa: E401
    import models_torch.network, models_torch.physics, models_torch.model  # noqa: E401
    import models_torch.losses, models_torch.training  # noqa: E401
    import models_numpy.network, models_numpy.physics, models_numpy.model, models_numpy.losses  # noqa: E401

    def public(module):
        return [name for name, obj in vars(module).items()
                if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
                and obj.__module__ == module.__name__]

    for name in ("network", "physics"):
        tf_mod, torch_mod = sys.modules[f"models_tf.{name}"], sys.modules[f"models_torch.{name}"]
        tf_names = public(tf_mod)
        torch_names = [n for n in public(torch_mod) if n in tf_names]
        assert tf_names == torch_names, f"{name}: same names in the same order"  # torch may add helpers
        # numpy: the same names in the same order, bar the translation matrix it does not use
        numpy_names = [n for n in public(sys.modules[f"models_numpy.{name}"]) if n in tf_names]
        assert numpy_names == [n for n in tf_names if n != "interpolation_matrix"], name
    for name in ("losses", "training"):
        tf_names = public(sys.modules[f"models_tf.{name}"])
        torch_names = [n for n in public(sys.modules[f"models_torch.{name}"]) if n in tf_names]
        assert tf_names == torch_names, f"{name}: same names in the same order"
    assert public(sys.modules["models_numpy.losses"]) == public(sys.modules["models_tf.losses"])
    for package in (models_tf, models_torch, models_numpy):
        assert hasattr(package.model.ForwardModel, "losses"), package.__name__
    for package in (models_tf, models_torch):
        for method in ("loss_and_gradients", "train_steps"):
            assert hasattr(package.model.ForwardModel, method), (package.__name__, method)
    for cls in ("ForwardModel",):
        for method in ("forward_train", "forward_infer", "save", "weights", "state"):
            for package in (models_tf, models_torch, models_numpy):
                assert hasattr(getattr(package.model, cls), method), (package.__name__, method)


def test_user_docs_stay_inside_the_repository():
    """README and docs/ speak to users of the package: no links or paths outside the repository,
    and every relative link they make resolves to a file in it."""
    import re

    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert (ROOT / "docs" / "design.md") in docs
    for doc in docs:
        text = doc.read_text()
        assert "../" not in text and "DESIGN.md" not in text and "shared project" not in text, doc.name
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if "://" not in target:
                assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
