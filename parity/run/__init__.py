"""One run: the engine, the pipeline and its checks, stage comparison, tolerances, the numpy arbitration, the per-process cache and the run's results."""
