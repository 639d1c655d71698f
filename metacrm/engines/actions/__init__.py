"""Automation actions: what rules and workflow transitions do, as a plugin registry.

An action is a named function of an `ActionContext` and its parameters (the YAML value
under the action's name). Built-in actions and plugins register through the
`register_rule_actions` hook; rules and transitions find them in an `ActionRegistry`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...platform.events import RecordEvent


class ActionFailed(Exception):
    """An action could not finish. `retryable` False parks the run at once (bad input)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class ActionContext:
    """What an action acts on: one record of one tenant, on behalf of a rule or transition.

    `source` names what runs the action (``rule:ocrm.stale_lead`` or
    ``workflow:ocrm.lead_lifecycle:qualify``); `key` is unique per execution, so an action
    with a side effect outside the database (a webhook, a message) can make it idempotent;
    `depth` counts the automations that led here (records written by the action carry
    depth + 1, and rules stop at a limit).
    """

    platform: Any
    runtime: Any
    entity: str
    record: Mapping[str, Any]
    source: str
    key: str
    depth: int = 0
    event: RecordEvent | None = None
    actor_id: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def now(self) -> dt.datetime:
        return self.platform.now()


@dataclass(frozen=True, slots=True)
class RuleAction:
    """One action kind: `run(context, params)`; `schema` (JSON Schema) checks the params at
    compile time."""

    name: str
    run: Callable[[ActionContext, Any], Any]
    description: str
    schema: Mapping[str, Any] | None = None


class ActionRegistry:
    """The actions known to one plugin manager, by name."""

    def __init__(self, actions: Iterable[RuleAction]) -> None:
        self._by_name: dict[str, RuleAction] = {}
        for action in actions:
            if action.name in self._by_name:
                raise ValueError(f"rule action {action.name!r} is registered twice")
            self._by_name[action.name] = action

    @classmethod
    def from_plugins(cls, plugin_manager: Any) -> ActionRegistry:
        return cls(a for batch in plugin_manager.hook.register_rule_actions() for a in batch)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[RuleAction]:
        return iter(self._by_name.values())

    def get(self, name: str) -> RuleAction | None:
        return self._by_name.get(name)

    def run(self, context: ActionContext, spec: Mapping[str, Any]) -> Any:
        """Run one action written as ``{name: params}``."""
        ((name, params),) = spec.items()
        action = self._by_name.get(name)
        if action is None:
            raise ActionFailed(f"there is no rule action `{name}`", retryable=False)
        return action.run(context, params)


def actions_of(platform: Any) -> ActionRegistry:
    """The platform's action registry (built once, kept in `platform.extensions`)."""
    found = platform.extensions.get("actions")
    if found is None:
        found = platform.extensions["actions"] = ActionRegistry.from_plugins(platform.plugins)
    return found
