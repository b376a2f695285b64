"""Root conftest. The parity plugin itself is registered by the package's `pytest11` entry point
(`ptycho_parity`), so it loads here and in any project that installs ptycho-parity."""
