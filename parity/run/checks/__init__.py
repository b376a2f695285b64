"""The checks of a parity run, one module each (docs/design.md §10); `parity.run.pipeline` runs them."""

from parity.run.checks.base import Check  # noqa: F401
from parity.run.record import REF, BackendRaised, RunContext  # noqa: F401
from parity.run.checks.config import ConfigAgreement, ConfigCheck  # noqa: F401
from parity.run.checks.checkpoint import CheckpointCheck, CheckpointRoundTrip, CrossCheckpoint  # noqa: F401
from parity.run.checks.forward import ForwardAgreement, PathConsistency  # noqa: F401
from parity.run.checks.golden import GoldenCheck  # noqa: F401
from parity.run.checks.origins import OriginsCheck  # noqa: F401
from parity.run.checks.gradients import (GradientAgreement, TrainingAgreement, gradient_checks, stand_in,  # noqa: F401
                                     training_checks)
