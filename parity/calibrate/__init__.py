"""`parity calibrate`: tolerances measured from the noise of honest implementations (docs/tolerances-origin.md)."""
