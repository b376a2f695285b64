"""Where the shipped data lives: the fixtures, the tolerance file and the goldens.

In a checkout (and an editable install) that is the repository's `fixtures/`; a built wheel
carries the same folder as `parity/fixtures/` (mapped at build time, see pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_INSTALLED = _PACKAGE / "fixtures"

#: True when running from an installed wheel (its data sits inside site-packages).
INSTALLED = _INSTALLED.is_dir()
FIXTURES_ROOT = _INSTALLED if INSTALLED else _PACKAGE.parent / "fixtures"
