"""Semantic checks of workflows, rules, SLA policies and duplicate rules.

Each check is a pure function of a CheckContext (see `checks`). Conditions are parsed
with the condition engine's own parser, so a condition that compiles is one the engine
can run; actions are checked against the plugin manager's action registry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator

from ..engines.conditions import ConditionError, OperatorRegistry, parse_condition
from ..engines.conditions.values import SYSTEM_FIELD_TYPES
from .checks import Check, CheckContext, _module_reach, at
from .diagnostics import Diagnostic, a_or_an, did_you_mean
from .ir import Entity, Scope, Source, thaw
from .resolve import RESERVED_ROLES

DATE_TYPES = frozenset({"date", "datetime"})


class _ScopeRegistry:
    """A scope dressed as the Registry `parse_condition` expects (checks run before the
    Registry exists)."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self.entities = scope.entities

    def scope(self, unit: str | None = None) -> Scope:
        return self._scope


def condition_problems(ctx: CheckContext, entity: Entity, condition: Any, where: Source | None,
                       code: str, owner: str, *place: str | int) -> Iterator[Diagnostic]:
    """The first problem of `condition` (about `entity`), as the condition engine sees it."""
    if condition is None:
        return
    operators = ctx.condition_operators or OperatorRegistry.builtin()
    try:
        parse_condition(condition, entity, _ScopeRegistry(ctx.scope), operators)  # type: ignore[arg-type]
    except ConditionError as exc:
        yield ctx.error(code, f"{owner}: {exc.message}", at(where, *place, *exc.path))


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


def action_problems(ctx: CheckContext, actions: Iterable[Mapping[str, Any]],
                    where: Source | None, owner: str, *place: str | int
                    ) -> Iterator[Diagnostic]:
    """Unknown action names and parameters their action's schema refuses."""
    registry = ctx.actions
    # The built-in actions come from the rules engine's plugin; with no action registered
    # at all (a plugin set without it) names cannot be checked, so nothing is reported.
    if registry is None or next(iter(registry), None) is None:
        return
    for index, spec in enumerate(actions):
        ((name, params),) = spec.items()
        action = registry.get(name)
        if action is None:
            known = sorted(a.name for a in registry)
            yield ctx.error("action.unknown", f"{owner}: there is no action `{name}`",
                            at(where, *place, index), did_you_mean(name, known)
                            or f"actions: {', '.join(known)}")
            continue
        if action.schema is None:
            continue
        try:
            text = json.dumps(dict(action.schema), sort_keys=True, default=str)
        except (TypeError, ValueError):
            continue
        for error in sorted(_validator(text).iter_errors(thaw(params)),
                            key=lambda e: list(map(str, e.absolute_path))):
            yield ctx.error("action.bad-params", f"{owner}: parameters of `{name}`: "
                            f"{error.message}", at(where, *place, index, name,
                                                   *error.absolute_path))
            break


def _field_problem(entity: Entity, name: str, types: frozenset[str] | None = None,
                   system: bool = False) -> tuple[str, str | None] | None:
    """Why `name` is not a field of `entity` (of one of `types`), with a hint; or None."""
    found = entity.get_field(name)
    field_type = found.type if found is not None else (
        SYSTEM_FIELD_TYPES.get(name) if system else None)
    fitting = [f.name for f in entity.fields if f.stored and (types is None or f.type in types)]
    if system and types is not None:
        fitting += [n for n, t in SYSTEM_FIELD_TYPES.items() if t in types]
    listed = f"{' or '.join(sorted(types)) if types else 'the'} fields of {entity.key}: " + (
        ", ".join(fitting) or "none")
    if field_type is None:
        return (f"`{name}` is not a field of {entity.key}",
                did_you_mean(name, fitting or entity.field_names) or listed)
    if types is not None and field_type not in types:
        return (f"`{name}` is {a_or_an(field_type)} field; it must be "
                f"{' or '.join(sorted(types))}", listed)
    return None


def _entity(ctx: CheckContext, kind: str, name: str, key: str, where: Source | None
            ) -> tuple[Entity | None, list[Diagnostic]]:
    """The entity a definition is for, or the diagnostic saying it does not exist."""
    entity = ctx.scope.entities.get(key)
    if entity is not None:
        return entity, []
    module = key.split(".")[0]
    what = "SLA policy" if kind == "sla" else kind
    return None, [ctx.error(f"{kind}.unknown-entity", f"{what} `{name}` is for `{key}`, which is "
                            "not an entity of the enabled modules", at(where, "entity"),
                            did_you_mean(key, ctx.scope.entities) or (
                                f"module `{module}` is not enabled here; enabled: "
                                f"{', '.join(ctx.scope.modules) or 'none'}"
                                if module not in ctx.scope.modules else
                                f"entities of `{module}`: " + (", ".join(
                                    k for k in ctx.scope.entities if k.startswith(module + "."))
                                    or "none")))]


def _reach(ctx: CheckContext, origin: str, target: str, what: str, where: Source | None
           ) -> Iterator[Diagnostic]:
    """A module's definition may only name its own and its dependencies' definitions."""
    module = target.split(".")[0]
    if origin in ctx.modules and module in ctx.modules and \
            module not in _module_reach(ctx, origin):
        yield ctx.error("ref.undeclared-dependency", f"{what} names `{target}` of module "
                        f"`{module}`, which module `{origin}` does not depend on", where,
                        f"add `{module}` to `depends` in module.yaml")


def _roles(ctx: CheckContext, names: Iterable[str], where: Source | None, owner: str,
           *place: str | int) -> Iterator[Diagnostic]:
    known = set(ctx.scope.roles) | RESERVED_ROLES
    for index, name in enumerate(names):
        if name not in known:
            yield ctx.error("workflow.unknown-role", f"{owner}: there is no role `{name}`",
                            at(where, *place, index), did_you_mean(name, known)
                            or f"roles here: {', '.join(sorted(known))}")


# -- workflows ------------------------------------------------------------------------------

def check_workflows(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Entity, enum field, states, transitions (states, fields, roles, conditions, actions)
    and at most one workflow per entity."""
    by_entity: dict[str, str] = {}
    for wf in ctx.scope.workflows.values():
        entity, problems = _entity(ctx, "workflow", wf.key, wf.entity, wf.source)
        yield from problems
        if entity is None:
            continue
        yield from _reach(ctx, wf.origin, wf.entity, f"workflow `{wf.key}`",
                          at(wf.source, "entity"))
        if wf.entity in by_entity:
            yield ctx.error("workflow.two-for-entity", f"{wf.entity} has two workflows: "
                            f"`{by_entity[wf.entity]}` and `{wf.key}`", wf.source,
                            "an entity has at most one workflow; extend the first one from an "
                            "overlay instead")
            continue
        by_entity[wf.entity] = wf.key
        found = entity.get_field(wf.field)
        if found is None:
            yield ctx.error("workflow.unknown-field", f"workflow `{wf.key}` runs over "
                            f"`{wf.field}`, which is not a field of {entity.key}",
                            at(wf.source, "field"), did_you_mean(wf.field, entity.field_names)
                            or "enum fields of " + entity.key + ": " + (", ".join(
                                f.name for f in entity.fields if f.type == "enum") or "none"))
            continue
        if found.type != "enum":
            enums = [f.name for f in entity.fields if f.type == "enum"]
            yield ctx.error("workflow.field-not-enum", f"workflow `{wf.key}` runs over "
                            f"`{wf.field}`, which is {'an' if found.type[0] in 'aeiou' else 'a'}"
                            f" {found.type} field; a workflow's field must be an enum",
                            at(wf.source, "field"),
                            f"enum fields of {entity.key}: {', '.join(enums)}" if enums else None)
            continue
        yield from _check_states(ctx, wf, entity)


def _check_states(ctx: CheckContext, wf: Any, entity: Entity) -> Iterator[Diagnostic]:
    options = entity.field(wf.field).option_values
    names = [s.name for s in wf.states]
    for state in wf.states:
        if state.name not in options:
            yield ctx.error("workflow.unknown-state", f"workflow `{wf.key}`: state `{state.name}`"
                            f" is not an option of {entity.key}.{wf.field}", state.source or
                            wf.source, did_you_mean(state.name, options) or
                            f"options: {', '.join(options)}")
    if wf.initial not in names:
        yield ctx.error("workflow.unknown-state", f"workflow `{wf.key}`: initial state "
                        f"`{wf.initial}` is not one of its states", at(wf.source, "initial"),
                        did_you_mean(wf.initial, names) or f"states: {', '.join(names)}")
    for t in wf.transitions:
        owner = f"workflow `{wf.key}`, transition `{t.name}`"
        for index, state in enumerate(t.from_states):
            if state not in names:
                yield ctx.error("workflow.unknown-state", f"{owner}: `from` names `{state}`, "
                                "which is not a state", at(t.source, "from", index),
                                did_you_mean(state, names) or f"states: {', '.join(names)}")
        if t.to not in names:
            yield ctx.error("workflow.unknown-state", f"{owner}: `to` names `{t.to}`, which is "
                            "not a state", at(t.source, "to"),
                            did_you_mean(t.to, names) or f"states: {', '.join(names)}")
        for index, name in enumerate(t.requires):
            problem = _field_problem(entity, name)
            if problem:
                yield ctx.error("workflow.unknown-field", f"{owner}, `requires`: {problem[0]}",
                                at(t.source, "requires", index), problem[1])
        yield from _roles(ctx, t.roles, t.source, owner, "roles")
        if t.approval is not None:
            if t.approval.by == "role" and not t.approval.roles:
                yield ctx.error("workflow.approval-roles", f"{owner}: an approval `by: role` "
                                "names the roles whose users approve", at(t.source, "approval"),
                                "add `roles: [...]`, or write `by: manager`")
            yield from _roles(ctx, t.approval.roles, t.source, owner, "approval", "roles")
        yield from condition_problems(ctx, entity, t.when, t.source, "workflow.bad-condition",
                                      f"{owner}, `when`", "when")
        yield from action_problems(ctx, t.actions, t.source, owner, "actions")


# -- rules ----------------------------------------------------------------------------------

def check_rules(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Entity, trigger (fields, transitions, the `after` field), condition and actions."""
    for rule in ctx.scope.rules.values():
        entity, problems = _entity(ctx, "rule", rule.key, rule.entity, rule.source)
        yield from problems
        if entity is None:
            continue
        yield from _reach(ctx, rule.origin, rule.entity, f"rule `{rule.key}`",
                          at(rule.source, "entity"))
        owner = f"rule `{rule.key}`"
        trigger, where = rule.trigger, rule.source
        if trigger.kind == "changed":
            for index, name in enumerate(trigger.fields):
                problem = _field_problem(entity, name, system=True)
                if problem:
                    yield ctx.error("rule.unknown-field", f"{owner}, `changed`: {problem[0]}",
                                    at(where, "trigger", "changed", index), problem[1])
        elif trigger.kind == "transitioned":
            yield from _check_transitioned(ctx, rule, entity)
        elif trigger.kind == "after":
            problem = _field_problem(entity, trigger.field or "", DATE_TYPES, system=True)
            if problem:
                yield ctx.error("rule.bad-after-field", f"{owner}, `after`: {problem[0]}",
                                at(where, "trigger", "after", "field"), problem[1])
        yield from condition_problems(ctx, entity, rule.when, where, "rule.bad-condition",
                                      f"{owner}, `when`", "when")
        yield from action_problems(ctx, rule.actions, where, owner, "do")


def _check_transitioned(ctx: CheckContext, rule: Any, entity: Entity) -> Iterator[Diagnostic]:
    workflow = ctx.scope.workflow_for(entity.key)
    if workflow is None:
        yield ctx.error("rule.no-workflow", f"rule `{rule.key}` fires on transitions of "
                        f"{entity.key}, which has no workflow", at(rule.source, "trigger"),
                        "define a workflow for the entity, or use `changed: [field]`")
        return
    names = [t.name for t in workflow.transitions]
    for index, name in enumerate(rule.trigger.transitions):
        if name not in names:
            yield ctx.error("rule.unknown-transition", f"rule `{rule.key}` fires on transition "
                            f"`{name}`, which workflow `{workflow.key}` does not have",
                            at(rule.source, "trigger", "transitioned", index),
                            did_you_mean(name, names) or f"transitions: {', '.join(names)}")


# -- service levels -------------------------------------------------------------------------

def check_slas(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Entity, calendar, the `by` enum and its target keys, conditions, clock fields and
    escalation actions."""
    for policy in ctx.scope.sla_policies.values():
        entity, problems = _entity(ctx, "sla", policy.key, policy.entity, policy.source)
        yield from problems
        where, owner = policy.source, f"SLA policy `{policy.key}`"
        if policy.calendar not in ctx.scope.calendars:
            yield ctx.error("sla.unknown-calendar", f"{owner} uses calendar `{policy.calendar}`"
                            ", which does not exist", at(where, "calendar"),
                            did_you_mean(policy.calendar, ctx.scope.calendars) or
                            "calendars here: " + (", ".join(ctx.scope.calendars) or "none"))
        else:
            yield from _reach(ctx, policy.origin, policy.calendar, owner, at(where, "calendar"))
        if entity is None:
            continue
        yield from _reach(ctx, policy.origin, policy.entity, owner, at(where, "entity"))
        options: tuple[str, ...] | None = ()
        if policy.by is not None:
            problem = _field_problem(entity, policy.by, frozenset({"enum"}))
            if problem:
                yield ctx.error("sla.bad-by", f"{owner}, `by`: {problem[0]}", at(where, "by"),
                                problem[1])
                options = None
            else:
                options = entity.field(policy.by).option_values
        for clock in policy.clocks:
            place = ("clocks", clock.name)
            if options is not None:
                for value in clock.targets:
                    if value and value not in options:
                        yield ctx.error(
                            "sla.unknown-target", f"{owner}, clock `{clock.name}`: `{value}` is "
                            + (f"not an option of {entity.key}.{policy.by}" if policy.by else
                               "a target for a value of `by`, but the policy has no `by`"),
                            at(where, *place, "targets", value),
                            did_you_mean(value, options) or (
                                f"options: {', '.join(options)}; `default` covers the rest"
                                if policy.by else "add `by: <enum field>` or write `default`"))
            if clock.field is not None:
                problem = _field_problem(entity, clock.field, frozenset({"datetime"}))
                if problem:
                    yield ctx.error("sla.bad-clock-field", f"{owner}, clock `{clock.name}`, "
                                    f"`field`: {problem[0]}", at(where, *place, "field"),
                                    problem[1])
            yield from condition_problems(ctx, entity, clock.stop, where, "sla.bad-condition",
                                          f"{owner}, `stop` of `{clock.name}`", *place, "stop")
            yield from condition_problems(ctx, entity, clock.start, where, "sla.bad-condition",
                                          f"{owner}, `start` of `{clock.name}`", *place, "start")
        for option in ("when", "pause_when"):
            yield from condition_problems(ctx, entity, getattr(policy, option), where,
                                          "sla.bad-condition", f"{owner}, `{option}`", option)
        for index, level in enumerate(policy.escalations):
            yield from action_problems(ctx, level.actions, where, owner, "escalations", index,
                                       "do")


# -- duplicates -----------------------------------------------------------------------------

def check_duplicates(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Match rules name stored fields of their entity, once each, and parse their `when`."""
    for entity in ctx.scope.entities.values():
        seen: set[str] = set()
        for rule in entity.duplicates:
            owner = f"match rule `{rule.name}` of {entity.key}"
            if rule.name in seen:
                yield ctx.error("duplicates.duplicate-rule", f"match rule `{rule.name}` is "
                                f"listed twice for {entity.key}", at(rule.source, "rule"),
                                "give each match rule its own name")
            seen.add(rule.name)
            for index, key in enumerate(rule.keys):
                found = entity.get_field(key.field)
                if found is None or not found.stored:
                    message, hint = _field_problem(entity, key.field) or (
                        f"`{key.field}` is {a_or_an(found.type)} field, not stored",  # type: ignore[union-attr]
                        "match rules compare stored fields")
                    yield ctx.error("duplicates.unknown-field", f"{owner}: {message}",
                                    at(rule.source, "keys", index), hint)
            yield from condition_problems(ctx, entity, rule.when, rule.source,
                                          "duplicates.bad-condition", f"{owner}, `when`", "when")


AUTOMATION_CHECKS: tuple[Check, ...] = (check_workflows, check_rules, check_slas,
                                        check_duplicates)
