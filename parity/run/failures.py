"""What a backend raised, as the harness reports it: a `Failure` located at the user's own frame
(docs/design.md §10), and the exceptions an adapter raises for wiring (`WiringError`, exit 2) and
for a stage it cannot compute from given inputs (`CannotForce`)."""

from __future__ import annotations

import sysconfig
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from parity.errors import WiringError

WIRING, RAISED, INPUT = "wiring", "raised", "input"  # the kinds of error (INPUT: a corrupt golden of the case)
_HARNESS = Path(__file__).resolve().parents[1]  # frames inside parity/ are the harness, not the user's code
# frames in the standard library and installed packages are libraries the user's code called
_LIBRARIES = tuple({Path(sysconfig.get_paths()[k]).resolve() for k in ("stdlib", "platstdlib", "purelib", "platlib")})
MESSAGE_LINES = 10  # an exception's message kept in full up to this many lines


class CannotForce(Exception):
    """An adapter cannot put the reference's inputs to a stage in place of the port's (a derived
    input, a transform without its inverse): that stage has no local error, and says why."""


@dataclass
class Failure:
    """An exception a backend raised while the harness called it."""

    kind: str  # WIRING, RAISED or INPUT
    type: str
    message: str  # in full, up to MESSAGE_LINES lines
    where: Optional[str]  # "file:line in function": the user's frame (see failure_from)
    during: str  # what the harness asked for, e.g. "my-port forward_train"
    traceback: str
    beneath: Optional[str] = None  # the library frame under the user's, where the raise happened

    def line(self) -> str:
        """One line: what raised, its message's first line, where."""
        first = self.message.splitlines()[0] if self.message else ""
        if self.kind == WIRING:
            return f"adapter wiring ({self.during}): {first}"
        if self.kind == INPUT:
            return f"bad input ({self.during}): {first}"
        at = f" at {self.where}" if self.where else ""
        under = f" (raised in {self.beneath})" if self.beneath else ""
        return f"{self.during} raised {self.type}: {first}{at}{under}"

    def more(self) -> list[str]:
        """The message's lines after the first (the console shows them under the line)."""
        return self.message.splitlines()[1:]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "type": self.type, "message": self.message, "where": self.where,
                "beneath": self.beneath, "during": self.during, "traceback": self.traceback}


def input_failure(message: str, during: str) -> Failure:
    """A Failure for bad input of one case (its golden is corrupt): no backend raised, exit 2."""
    return Failure(INPUT, "bad input", message, None, during, "")


def _in(frame, folders) -> bool:
    path = Path(frame.filename).resolve()
    return any(path.is_relative_to(folder) for folder in folders)


def failure_from(exc: BaseException, during: str) -> Failure:
    """A Failure for `exc`, located at the user's frame: the innermost frame that is neither the
    harness's own code nor a library's (the standard library, installed packages), with the
    library frame beneath it where the raise happened there (torch's grid_sample under the user's
    call to it). Where no frame is the user's, the innermost outside the harness; where the whole
    stack is the harness's, its innermost frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    # raised in a backend's own process (parity.recorded.remote): its frames are the innermost
    frames += [traceback.FrameSummary(f, n, name, line=line) for f, n, name, line in getattr(exc, "remote_frames", ())]
    outside = [f for f in frames if not _in(f, (_HARNESS,))]
    users = [f for f in outside if not _in(f, _LIBRARIES)]
    frame = (users or outside or frames or [None])[-1]
    where = f"{frame.filename}:{frame.lineno} in {frame.name}" if frame is not None else None
    beneath = None
    if users and users[-1] is not outside[-1]:
        lib = outside[-1]
        beneath = f"{lib.filename}:{lib.lineno} in {lib.name}"
    kind = WIRING if isinstance(exc, WiringError) else RAISED
    text = getattr(exc, "remote_traceback", None) or "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    message = "\n".join(str(exc).strip().splitlines()[:MESSAGE_LINES])
    return Failure(kind, type(exc).__name__, message, where, during, text, beneath)
