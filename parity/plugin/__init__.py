"""The pytest plugin (`pytest -k parity`) and its fixtures."""
