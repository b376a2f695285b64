"""The parity pytest plugin, loaded by the root conftest. Registers the project's markers."""


def pytest_configure(config):
    config.addinivalue_line("markers", "parity: backend-agreement and golden tests (`pytest -k parity`)")
    config.addinivalue_line("markers", "cuda: needs a CUDA device; skipped where there is none")
