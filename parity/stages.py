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

# What each stage is computed from (docs/design.md §12): the stages it reads. A stage with no
# inputs here reads only the batch, so its local error is its end-to-end error. Besides these,
# `probe.illuminated` reads the probe and `scaled_input` and `diffraction.scaled` read log_scale,
# model state that the checkpoint checks judge.
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "input.diffraction": (),
    "input.offsets": (),
    "scaled_input": ("input.diffraction",),
    "encoder.out": ("scaled_input",),
    "decoder.amp": ("encoder.out",),
    "decoder.phase": ("encoder.out",),
    "object.patches": ("decoder.amp", "decoder.phase"),
    "object.canvas": ("object.patches", "input.offsets"),
    "object.trimmed": ("object.canvas",),
    "object.extracted": ("object.canvas", "input.offsets"),
    "probe.illuminated": ("object.extracted",),
    "diffraction.amplitude": ("probe.illuminated",),
    "diffraction.scaled": ("diffraction.amplitude",),
    "diffraction.intensity": ("diffraction.scaled",),
}
