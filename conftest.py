"""Root conftest. The parity plugin itself is registered by the package's `pytest11` entry point
(`ptycho_parity`), so it loads here and in any project that installs ptycho-parity. pytester
drives the plugin and the adapters from the outside in the project's own tests."""

pytest_plugins = ["pytester"]
