"""A recorded reference: `parity record` and `--ref recorded:DIR` (docs/recorded.md)."""
