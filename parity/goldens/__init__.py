"""Goldens: the store (serializer, comparator, storage), the summaries they hold, fingerprints and `parity refresh`."""
