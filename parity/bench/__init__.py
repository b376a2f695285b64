"""`parity bench`: where the time goes, and the test tiers' timings."""
