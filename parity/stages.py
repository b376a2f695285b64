"""Stage names, in forward order: the trace keys of both backends (docs/design.md §2)."""

TRAIN_STAGES = (
    "input.diffraction",
    "input.offsets",
    "scaled_input",
    "encoder.out",
    "decoder.amp",
    "decoder.phase",
    "object.patches",
    "object.canvas",
    "object.trimmed",
    "object.extracted",
    "probe.illuminated",
    "diffraction.amplitude",
    "diffraction.scaled",
    "diffraction.intensity",
)
# forward_infer: the diffraction -> object path, up to the trimmed object
INFER_STAGES = TRAIN_STAGES[: TRAIN_STAGES.index("object.trimmed") + 1]
OBJECT_STAGES = tuple(s for s in INFER_STAGES if s.startswith("object."))
