"""kport: a PtychoPINN-style Keras model (functional API, TensorFlow backend), written without
ptycho-parity in mind: a params dict, layers auto-numbered the way Keras numbers them (so their
names change with N), patches handled as a flat stack (B·C, N, N, 1) by the physics, the probe a
layer weight set from the data, the intensity scale a trainable log weight shared by the input
and the output, an inference entry that stitches the patches outside the model, a .keras
checkpoint, and its own loss (a sum over the pixels, not a mean)."""

from kport.model import PARAMS, build, loss  # noqa: F401
