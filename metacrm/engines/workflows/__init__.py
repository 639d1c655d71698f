"""The workflow engine: state machines over an enum field, defined in YAML.

    take_transition(platform, runtime, "ocrm.lead", 7, "qualify", actor=actor, depth=0)

`WorkflowEngine` lists a record's transitions with the reasons each is refused, takes
them (or opens approval requests) and records the history; `workflow_bypass()` lets an
import write historical states. See docs/workflows.md.
"""

from __future__ import annotations

from .approvals import record_approvals, vote, waiting_for
from .engine import (
    Option,
    Refusal,
    Subject,
    TransitionResult,
    WorkflowEngine,
    take_transition,
)
from .guard import workflow_bypass, workflow_for
from .history import record_history, workflow_view
from .tables import APPROVALS, HISTORY, VOTES

__all__ = [
    "APPROVALS",
    "HISTORY",
    "VOTES",
    "Option",
    "Refusal",
    "Subject",
    "TransitionResult",
    "WorkflowEngine",
    "record_approvals",
    "record_history",
    "take_transition",
    "vote",
    "waiting_for",
    "workflow_bypass",
    "workflow_for",
    "workflow_view",
]
