"""Where each side of a parity session runs, and what happens when a side cannot: the device of
the port (--parity-device) and of the reference (--parity-ref-device), CUDA's availability,
and the skip (or, under --require-reference, the failure) of a test whose backend's framework is
not installed. Used by `parity.plugin.pytest_plugin`'s hooks and fixtures, and by tests themselves
(`require_backend`)."""

from __future__ import annotations

import pytest

PORT = "torch"  # the built-in candidate the parametrised tests check against the reference
_CUDA_STATE: dict[str, object] = {}
REQUIRE_REFERENCE: list[bool] = []  # this process's --require-reference, for `require_backend`


def cuda_problem(config) -> str | None:
    """Why CUDA parity runs cannot happen here (None when they can): the port on CUDA, and the
    reference too where --parity-ref-device cuda asks for it; asked once per process."""
    if "problem" not in _CUDA_STATE:
        from parity.backends import BackendError
        from parity.run.backend_run import DeviceUnavailable, require_device

        devices = {PORT: "cuda"}
        if config.getoption("parity_ref_device") == "cuda":
            devices[config.getoption("parity_ref")] = "cuda"
        try:
            require_device(devices)
            _CUDA_STATE["problem"] = None
        except (DeviceUnavailable, BackendError) as exc:
            _CUDA_STATE["problem"] = str(exc)
    return _CUDA_STATE["problem"]  # type: ignore[return-value]


def parity_device(config) -> str:
    """The port's device (--parity-device, auto resolved)."""
    device = config.getoption("parity_device")
    if device == "auto":
        return "cpu" if cuda_problem(config) else "cuda"
    return device


def backend_device(config, backend: str) -> str:
    """Where `backend` runs in this session: the reference on --parity-ref-device, any other
    backend on --parity-device (a CPU-only one, numpy, on the CPU)."""
    from parity.run.backend_run import backend_devices

    ref = config.getoption("parity_ref")
    return backend_devices(ref, [backend], parity_device(config), config.getoption("parity_ref_device"))[backend]


def require_backend(name: str) -> None:
    """Skip the running test, with one line naming the missing package, when the framework of
    backend `name` is not installed; fail it instead under --require-reference."""
    __tracebackhide__ = True
    from parity.backends import get_backend

    reason = get_backend(name).missing()
    if reason is None:
        return
    if REQUIRE_REFERENCE and REQUIRE_REFERENCE[-1]:
        pytest.fail(f"--require-reference: {reason}", pytrace=False)
    pytest.skip(reason)


class Sides:
    """The reference and the port of this session, each with its device."""

    def __init__(self, ref: str, ref_device: str, port: str, port_device: str):
        self.ref, self.ref_device, self.port, self.port_device = ref, ref_device, port, port_device

    @property
    def id(self) -> str:
        return f"{self.ref}-{self.ref_device}-vs-{self.port}-{self.port_device}"

    def __repr__(self) -> str:
        return f"{self.ref} on {self.ref_device} vs {self.port} on {self.port_device}"


def parity_sides_of(config) -> Sides:
    ref = config.getoption("parity_ref")
    return Sides(ref, backend_device(config, ref), PORT, backend_device(config, PORT))
