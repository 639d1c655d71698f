"""Drafts → IR for workflows, rules, calendars and SLA policies.

Problems only the builder can see (a duration, a cron expression, a time span, a
timezone, a holiday that does not parse) are reported here with their place in the
file; references between definitions are checked in `automation_checks`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .automation import OptionsDraft, PartDraft, WorkflowDraft
from .build import located, located_at, source_of
from .diagnostics import DiagnosticSink, DocPath
from .durations import parse_duration
from .ir import (
    Approval,
    Calendar,
    Entity,
    EscalationLevel,
    FrozenDict,
    Rule,
    SlaClock,
    SlaPolicy,
    State,
    Text,
    Transition,
    Trigger,
    Workflow,
    freeze,
)
from .loader import Document

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SPAN = re.compile(r"^([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2})$")
DEFAULT_TARGET = "default"
"""The key of an SLA target that applies to every value of `by` not listed (``""`` in IR)."""


def _label(spec: Mapping[str, Any], name: str) -> Text:
    return Text.of(spec.get("label"), name.replace("_", " ").capitalize())


def _names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def actions_of(items: Any) -> tuple[FrozenDict[str, Any], ...]:
    """`[{name: params}, ...]` as frozen one-key mappings."""
    return tuple(freeze(item) for item in items or ())


def valid_timezone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def valid_cron(text: str) -> bool:
    """A five-field cron expression (minute hour day month weekday) or an alias (@daily)."""
    return croniter.is_valid(text) and (text.startswith("@") or len(text.split()) == 5)


class AutomationBuilder:
    """Builds workflows, rules, calendars and policies, one object per unchanged draft."""

    def __init__(self, sink: DiagnosticSink) -> None:
        self.sink = sink
        self._cache: dict[Any, tuple[Any, Any]] = {}

    def _cached(self, key: Any, keep: Any, make: Any) -> Any:
        found = self._cache.get(key)
        if found is None:
            found = (keep, make())
            self._cache[key] = found
        return found[1]

    def error(self, where: tuple[Document, DocPath], code: str, message: str,
              hint: str | None = None) -> None:
        doc, path = where
        self.sink.add(doc.diagnostic(code, message, path, hint=hint))

    # -- workflows --------------------------------------------------------------------------

    def workflow(self, draft: WorkflowDraft, entities: Mapping[str, Entity]) -> Workflow:
        """A workflow as one scope sees it (its default states are its field's options there)."""
        entity = entities.get(draft.spec.get("entity", ""))
        return self._cached((id(draft), id(entity)), (draft, entity),
                            lambda: self._workflow(draft, entity))

    def _workflow(self, draft: WorkflowDraft, entity: Entity | None) -> Workflow:
        spec = draft.spec
        found = entity.get_field(spec.get("field", "")) if entity is not None else None
        options = {o.value: o for o in found.options} if found is not None else {}
        names = list(draft.states) if draft.listed else \
            [*options, *(s for s in draft.states if s not in options)]
        states = []
        for name in names:
            part = draft.states.get(name)
            state_spec = part.spec if part is not None and part.spec else {}
            label = Text.of(state_spec["label"]) if "label" in state_spec else (
                options[name].label if name in options else Text.of(None, name))
            states.append(State(name, label, bool(state_spec.get("final")),
                                source_of(part.doc, part.path) if part else None))
        initial = spec.get("initial")
        if initial is None:
            default = found.default if found is not None else None
            initial = default if default in names else (names[0] if names else "")
        transitions = tuple(self._transition(name, part, states)
                            for name, part in draft.transitions.items())
        return Workflow(draft.module, draft.name, spec["entity"], spec.get("field", ""),
                        tuple(states), transitions, initial, _label(spec, draft.name),
                        draft.origin,
                        located(draft.doc, "workflow", {o: draft.locate(o) for o in
                                                        ("entity", "field", "initial")
                                                        if o in spec}))

    @staticmethod
    def _transition(name: str, part: PartDraft, states: list[State]) -> Transition:
        spec = part.spec
        if spec["from"] == "*":
            sources = tuple(s.name for s in states if not s.final and s.name != spec["to"])
        else:
            sources = _names(spec["from"])
        approval = None
        if "approval" in spec:
            raw = spec["approval"]
            approval = Approval(raw["by"], tuple(raw.get("roles") or ()), raw.get("count", 1),
                                raw.get("levels", 1))
        return Transition(name, sources, spec["to"], _label(spec, name),
                          tuple(spec.get("roles") or ()), freeze(spec.get("when")),
                          tuple(spec.get("requires") or ()), approval,
                          actions_of(spec.get("actions")), located_at(part.doc, part.path))

    # -- rules ------------------------------------------------------------------------------

    def rule(self, draft: OptionsDraft) -> Rule:
        return self._cached(id(draft), draft, lambda: self._rule(draft))

    def _rule(self, draft: OptionsDraft) -> Rule:
        spec = draft.spec
        return Rule(draft.module, draft.name, spec["entity"], self._trigger(draft),
                    actions_of(spec.get("do")), freeze(spec.get("when")),
                    _label(spec, draft.name), spec.get("enabled", True) is not False,
                    draft.origin,
                    located(draft.doc, "rule", {o: draft.locate(o) for o in
                                                ("entity", "trigger", "when", "do", "enabled")
                                                if o in spec}))

    def _trigger(self, draft: OptionsDraft) -> Trigger:
        raw = draft.spec["trigger"]
        if isinstance(raw, str):
            return Trigger(raw)
        ((kind, value),) = raw.items()
        doc, path = draft.locate("trigger")
        if kind == "changed":
            return Trigger(kind, fields=_names(value))
        if kind == "transitioned":
            return Trigger(kind, transitions=() if value == "*" else _names(value))
        if kind == "schedule":
            if not valid_cron(value):
                self.error((doc, (*path, kind)), "rule.bad-cron", f"`{value}` is not a cron "
                           "expression", "five fields: minute hour day-of-month month "
                           "day-of-week, e.g. \"0 9 * * mon-fri\" (09:00 on weekdays)")
            return Trigger(kind, cron=value)
        try:
            delay = parse_duration(value["delay"], signed=True)
        except ValueError as exc:
            self.error((doc, (*path, kind, "delay")), "rule.bad-delay", str(exc),
                       "write a delay such as 3d, 12h or -2w (before the field's time)")
            delay = 0
        return Trigger(kind, field=value["field"], delay=delay)

    # -- calendars --------------------------------------------------------------------------

    def calendar(self, draft: OptionsDraft) -> Calendar:
        return self._cached(id(draft), draft, lambda: self._calendar(draft))

    def _calendar(self, draft: OptionsDraft) -> Calendar:
        spec = draft.spec
        if not valid_timezone(spec["timezone"]):
            self.error(draft.locate("timezone"), "calendar.unknown-timezone",
                       f"`{spec['timezone']}` is not a timezone",
                       "use an IANA name such as Asia/Hong_Kong, Europe/London or UTC")
        days: dict[int, tuple[tuple[str, str], ...]] = {}
        if "weekdays" in spec:
            where = draft.locate("weekdays")
            spans = self._spans(spec["weekdays"], where)
            days.update({day: spans for day in range(5)})
        doc, path = draft.locate("hours")
        for day, items in (spec.get("hours") or {}).items():
            days[WEEKDAYS.index(day)] = self._spans(items, (doc, (*path, day)))
        hours = FrozenDict({d: days[d] for d in sorted(days) if days[d]})
        if not hours:
            self.error((draft.doc, ("calendar",)), "calendar.no-hours", f"calendar `{draft.key}` "
                       "has no working hours, so no business time would ever pass",
                       "add `weekdays: [\"09:00-18:00\"]` or `hours: {mon: [...], ...}`")
        holidays = []
        doc, path = draft.locate("holidays")
        for index, day in enumerate(spec.get("holidays") or ()):
            try:
                holidays.append(dt.date.fromisoformat(day).isoformat())
            except ValueError:
                self.error((doc, (*path, index)), "calendar.bad-holiday", f"`{day}` is not a "
                           "date", "write an ISO date: YYYY-MM-DD, e.g. 2026-12-25")
        return Calendar(draft.module, draft.name, spec["timezone"], hours,
                        tuple(sorted(holidays)), _label(spec, draft.name),
                        located(draft.doc, "calendar", {o: draft.locate(o) for o in
                                                        ("timezone", "weekdays", "hours",
                                                         "holidays") if o in spec}))

    def _spans(self, items: Any, where: tuple[Document, DocPath]) -> tuple[tuple[str, str], ...]:
        """Spans "HH:MM-HH:MM" of one day, in order; reports bad and overlapping ones."""
        doc, path = where
        spans: list[tuple[int, int, str, str, int]] = []
        for index, text in enumerate(items):
            match = SPAN.match(text)
            minutes = None
            if match:
                h1, m1, h2, m2 = (int(g) for g in match.groups())
                if h1 < 24 and h2 <= 24 and m1 < 60 and m2 < 60 and (h2 < 24 or m2 == 0):
                    minutes = (h1 * 60 + m1, h2 * 60 + m2)
            if minutes is None or minutes[0] >= minutes[1]:
                why = "its start is not before its end" if minutes else "the times are not " \
                    "valid 24-hour times"
                self.error((doc, (*path, index)), "calendar.bad-span", f"`{text}` is not a time "
                           f"span: {why}", "write \"HH:MM-HH:MM\", e.g. \"09:00-18:00\" "
                           "(24:00 ends the day)")
                continue
            spans.append((*minutes, text[:5], text[6:], index))
        spans.sort()
        for before, after in pairwise(spans):
            if after[0] < before[1]:
                self.error((doc, (*path, after[4])), "calendar.overlapping-spans",
                           f"`{after[2]}-{after[3]}` overlaps `{before[2]}-{before[3]}`",
                           "list each working period of the day once")
        return tuple((s[2], s[3]) for s in spans)

    # -- service levels ---------------------------------------------------------------------

    def sla(self, draft: OptionsDraft) -> SlaPolicy:
        return self._cached(id(draft), draft, lambda: self._sla(draft))

    def _sla(self, draft: OptionsDraft) -> SlaPolicy:
        spec = draft.spec
        doc, path = draft.locate("clocks")
        clocks = []
        for name, clock in spec["clocks"].items():
            targets: dict[str, int] = {}
            for value, text in clock["targets"].items():
                where = (doc, (*path, name, "targets", value))
                try:
                    seconds = parse_duration(text)
                except ValueError as exc:
                    self.error(where, "sla.bad-target", str(exc), "e.g. 4h, 2d or 1w")
                    continue
                if seconds == 0:
                    self.error(where, "sla.bad-target", f"the target for `{value}` is zero",
                               "give a length of business time, e.g. 4h")
                targets["" if value == DEFAULT_TARGET else value] = seconds
            start = clock.get("start")
            clocks.append(SlaClock(name, freeze(clock["stop"]), FrozenDict(targets),
                                   None if start in (None, "created") else freeze(start),
                                   clock.get("field")))
        escalations = tuple(
            EscalationLevel(float(item["at"]), item.get("levels_up", 1),
                            actions_of(item.get("do")))
            for item in spec.get("escalations") or ())
        return SlaPolicy(draft.module, draft.name, spec["entity"], spec["calendar"],
                         tuple(clocks), freeze(spec.get("when")), spec.get("by"),
                         freeze(spec.get("pause_when")), float(spec.get("warn_at", 0.8)),
                         escalations, _label(spec, draft.name), draft.origin,
                         located(draft.doc, "sla", {o: draft.locate(o) for o in
                                                    ("entity", "calendar", "when", "by",
                                                     "pause_when", "clocks", "escalations")
                                                    if o in spec}))
