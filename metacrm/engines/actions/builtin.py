"""The built-in actions, registered like a plugin's (`register_rule_actions`)."""

from __future__ import annotations

from ...hookspecs import hookimpl
from . import RuleAction
from .assign import ACTIONS as ASSIGN
from .create import ACTIONS as CREATE
from .fields import ACTIONS as SET
from .notify import ACTIONS as NOTIFY
from .transition import ACTIONS as TRANSITION
from .webhook import ACTIONS as WEBHOOK


def builtin_actions() -> list[RuleAction]:
    return [*SET, *CREATE, *ASSIGN, *NOTIFY, *WEBHOOK, *TRANSITION]


@hookimpl
def register_rule_actions() -> list[RuleAction]:
    return builtin_actions()
