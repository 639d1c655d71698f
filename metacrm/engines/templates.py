"""Templates in automation: Jinja2's immutable sandbox, strict about undefined names.

    render_value(platform, {"title": "Follow up {{ record.company }}"}, variables)

A string holding one expression and nothing else (``"{{ record.score + 10 }}"``) gives
that expression's value (a number stays a number); any other string renders as text;
mappings and lists render item by item; other values pass through. The environment is
built once per platform (``platform.extensions["templates"]``) and keeps compiled
templates; the sandbox refuses attribute tricks (``{{ ''.__class__ }}``), changing
values in place, and unknown names (`StrictUndefined`).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .conditions import Duration

EXTENSION_KEY = "templates"
ONE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{|\{%|\{#).)*)\}\}\s*$", re.S)
MAX_TEMPLATE = 20_000
CACHE_SIZE = 1000
HIDDEN_EXTRAS = frozenset({"user", "scope", "run_id", "rule", "trigger"})

__all__ = ["TemplateError", "Templates", "render_value", "template_variables", "templates_of"]


def duration(text: str) -> dt.timedelta:
    """`duration("3d")`: a length of time to add to `now` or a date."""
    return Duration.parse(text).delta


class Templates:
    """One sandboxed environment and its compiled templates (bounded, thread-safe)."""

    def __init__(self) -> None:
        self.env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                                 keep_trailing_newline=True)
        self.env.globals.update(duration=duration)
        self._compiled: OrderedDict[tuple[str, str], Callable[..., Any]] = OrderedDict()
        self._lock = threading.Lock()

    def _compile(self, kind: str, source: str) -> Callable[..., Any]:
        key = (kind, source)
        with self._lock:
            found = self._compiled.get(key)
            if found is not None:
                self._compiled.move_to_end(key)
                return found
        if len(source) > MAX_TEMPLATE:
            raise TemplateError(f"a template may hold at most {MAX_TEMPLATE} characters")
        if kind == "expression":
            found = self.env.compile_expression(source, undefined_to_none=False)
        else:
            found = self.env.from_string(source).render
        with self._lock:
            self._compiled[key] = found
            while len(self._compiled) > CACHE_SIZE:
                self._compiled.popitem(last=False)
        return found

    def render(self, source: str, variables: Mapping[str, Any]) -> str:
        """`source` rendered as text."""
        return self._compile("text", source)(**variables)

    def evaluate(self, expression: str, variables: Mapping[str, Any]) -> Any:
        """The value of one Jinja expression."""
        value = self._compile("expression", expression)(**variables)
        if isinstance(value, Undefined):
            str(value)  # StrictUndefined raises UndefinedError, naming what is missing
        return value

    def value(self, value: Any, variables: Mapping[str, Any]) -> Any:
        """`value` with every template in it rendered (see the module's docstring)."""
        if isinstance(value, str):
            if "{{" not in value and "{%" not in value and "{#" not in value:
                return value
            match = ONE_EXPRESSION.match(value)
            if match is not None:
                return plain(self.evaluate(match.group("expr"), variables))
            return self.render(value, variables)
        if isinstance(value, Mapping):
            return {k: self.value(v, variables) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v, variables) for v in value]
        return value


def plain(value: Any) -> Any:
    """A template's value as JSON-like data (dates as ISO text, decimals as text)."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.timedelta):
        return int(value.total_seconds())
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def templates_of(platform: Any) -> Templates:
    """The platform's template environment (built once, kept in `platform.extensions`)."""
    found = platform.extensions.get(EXTENSION_KEY)
    if found is None:
        found = platform.extensions.setdefault(EXTENSION_KEY, Templates())
    return found


def render_value(platform: Any, value: Any, variables: Mapping[str, Any]) -> Any:
    return templates_of(platform).value(value, variables)


def template_variables(context: Any) -> dict[str, Any]:
    """What a template sees for an action: `record` (the record as it is now), `event`
    (what triggered it: kind, changes, transition, actor, at, trigger), `now` (in the
    tenant's timezone) and `user` (who made the triggering change: id, username,
    display_name, email; None for the system or a schedule); plus the plain values the
    caller put in the context's extras (an SLA escalation's `sla` and `escalate_to`, a
    transition's `workflow` and `transition`)."""
    from zoneinfo import ZoneInfo

    runtime = context.runtime
    now = context.now().astimezone(ZoneInfo(runtime.config.timezone))
    event = context.event
    detail: dict[str, Any] = {"trigger": context.extras.get("trigger"), "kind": None,
                              "changes": {}, "transition": None, "actor": context.actor_id,
                              "at": None, "entity": context.entity,
                              "record_id": context.record.get("id")}
    if event is not None:
        detail.update(kind=event.kind, transition=event.transition, actor=event.actor,
                      at=event.at.isoformat(),
                      changes={k: {"before": v[0], "after": v[1]}
                               if isinstance(v, tuple | list) and len(v) == 2 else v
                               for k, v in event.changes.items()})
    if "user" not in context.extras:  # read once per run (the extras travel with it)
        context.extras["user"] = _user(runtime, context.actor_id)
    found = {k: v for k, v in context.extras.items() if k not in HIDDEN_EXTRAS
             and isinstance(v, str | int | float | bool | dict | list | None)}
    found.update(record=dict(context.record), event=detail, now=now,
                 user=context.extras["user"])
    return found


def _user(runtime: Any, user_id: int | None) -> dict[str, Any] | None:
    if user_id is None:
        return None
    import sqlalchemy as sa

    from ..platform.systables import runtime_system_tables

    users = runtime_system_tables(runtime).users
    with runtime.connect() as connection:
        row = connection.execute(sa.select(users.c.id, users.c.username, users.c.display_name,
                                           users.c.email).where(users.c.id == user_id)).first()
    return dict(row._mapping) if row is not None else None
