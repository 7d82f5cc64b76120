"""Fault injection: let a test kill the trainer at an exact point of an exact step.

The fault suite (tests/test_faults_*.py, `make faults`) proves that a trainer killed anywhere
resumes from its last complete checkpoint without losing or duplicating a step. Killing from the
outside at a random moment rarely lands inside the short windows that matter (a checkpoint
half-written, one step's rollouts on disk but not its metrics), so the trainer calls
`fault_point` at those places, and a test names one of them in the environment:

    RFT_FAULT_POINT=checkpoint:4 python -m rft train ...

The process then dies by SIGKILL, exactly as if the kernel's OOM killer or `kill -9` had hit it
there. Without the variable, `fault_point` does nothing.
"""

from __future__ import annotations

import os
import signal

FAULT_POINT_VARIABLE = "RFT_FAULT_POINT"

# Where the trainer calls fault_point, in the order a step reaches them.
FAULT_POINTS = {
    "generate": "after generating a micro-batch, before scoring it",
    "optimizer": "after the optimizer step, before anything of the step is written",
    "metrics": "after appending the step's rollouts, before appending its metrics",
    "checkpoint": "with the checkpoint half-written (adapter saved, trainer state not yet)",
}


def fault_point(name: str, step: int) -> None:
    """Die by SIGKILL here when $RFT_FAULT_POINT is `name:step`."""
    if os.environ.get(FAULT_POINT_VARIABLE) == f"{name}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
