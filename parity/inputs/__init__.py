"""The inputs of a run: the fly001 NPZ contract, the shipped fixture, the named cases, the neutral weights and NPZ checkpoints."""
