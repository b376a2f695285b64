"""Root conftest: loads the parity pytest plugin (markers now; options and goldens later)."""

pytest_plugins = ["parity.pytest_plugin"]
