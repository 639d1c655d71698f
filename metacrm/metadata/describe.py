"""Plain-data descriptions of Registry objects, for `metacrm show` and the API's _meta."""

from __future__ import annotations

from typing import Any

from .durations import format_duration
from .ir import (
    Calendar,
    Entity,
    Field,
    Form,
    Grant,
    MatchRule,
    Role,
    Rule,
    Scope,
    SlaPolicy,
    Text,
    Transition,
    Trigger,
    View,
    Workflow,
    thaw,
)


def text(value: Text) -> Any:
    """A Text as YAML would write it: a string, or a locale map."""
    values = dict(value.values)
    if list(values) == ["*"]:
        return values["*"]
    return values or None


def describe_field(field: Field) -> dict[str, Any]:
    out: dict[str, Any] = {"type": field.type, "id": field.id, "label": text(field.label)}
    optional = {
        "help": text(field.help) if field.help else None,
        "required": field.required or None, "unique": field.unique or None,
        "index": field.index or None, "default": thaw(field.default),
        "read_only": field.read_only or None, "hidden": field.hidden or None,
        "min": field.min, "max": field.max, "max_length": field.max_length,
        "pattern": field.pattern, "precision": field.precision, "scale": field.scale,
        "currency": field.currency, "to": field.target if field.type != "children" else None,
        "of": field.target if field.type == "children" else None, "via": field.via,
        "on_delete": field.on_delete, "autonumber": field.autonumber,
        "expression": field.formula.text if field.formula else None, "returns": field.returns,
        "renamed_from": list(field.renamed_from) or None,
        "options": [{"value": o.value, "label": text(o.label)} for o in field.options] or None,
        "origin": field.origin if field.origin != "module" else None,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    out.update(thaw(field.params))
    return out


def describe_form(form: Form) -> dict[str, Any]:
    return {"label": text(form.label), "default": form.default, "origin": form.origin,
            "sections": [{"name": s.name, "label": text(s.label), "columns": s.columns,
                          "fields": [f.field for f in s.fields]} for s in form.sections]}


def describe_view(view: View) -> dict[str, Any]:
    out: dict[str, Any] = {"label": text(view.label), "default": view.default,
                           "origin": view.origin, "columns": [c.field for c in view.columns],
                           "sort": [("-" if k.descending else "") + k.field for k in view.sort],
                           "page_size": view.page_size}
    if view.filter is not None:
        out["filter"] = thaw(view.filter)
    return out


def describe_entity(entity: Entity, scope: Scope | None = None, *,
                    automation: bool = False) -> dict[str, Any]:
    """An entity as resolved, with the forms and views its scope has for it; with
    `automation`, also its workflow, rules and SLA policies (for people who maintain the
    definitions: rules may carry addresses and templates that API clients need not see)."""
    out: dict[str, Any] = {"entity": entity.key, "id": entity.id, "label": text(entity.label)}
    if entity.plural_label:
        out["plural_label"] = text(entity.plural_label)
    if entity.title:
        out["title"] = entity.title
    if entity.search:
        out["search"] = list(entity.search)
    if entity.indexes:
        out["indexes"] = [{"name": i.name, "fields": list(i.fields), "unique": i.unique}
                          for i in entity.indexes]
    if entity.duplicates:
        out["duplicates"] = [describe_match_rule(r) for r in entity.duplicates]
    out["fields"] = {f.name: describe_field(f) for f in entity.fields}
    if scope is not None:
        out["forms"] = {f.key: describe_form(f) for f in scope.forms_for(entity.key)}
        out["views"] = {v.key: describe_view(v) for v in scope.views_for(entity.key)}
    if scope is not None and automation:
        workflow = scope.workflow_for(entity.key)
        if workflow is not None:
            out["workflow"] = {workflow.key: describe_workflow(workflow)}
        rules = [r for r in scope.rules.values() if r.entity == entity.key]
        if rules:
            out["rules"] = {r.key: describe_rule(r) for r in rules}
        policies = [p for p in scope.sla_policies.values() if p.entity == entity.key]
        if policies:
            out["slas"] = {p.key: describe_sla(p) for p in policies}
    return out


def describe_grant(grant: Grant) -> dict[str, Any]:
    """A grant as resolved: every granted action (a scope, or {scope, when}), its fields."""
    actions = {a: r.scope if r.when is None else {"scope": r.scope, "when": thaw(r.when)}
               for a, r in grant.actions.items()}
    out: dict[str, Any] = {"origin": grant.origin, "actions": actions}
    if grant.fields:
        out["fields"] = dict(grant.fields)
    return out


def describe_role(role: Role) -> dict[str, Any]:
    """A role as one scope sees it, with its grants by entity."""
    out: dict[str, Any] = {"label": text(role.label)}
    if role.description:
        out["description"] = text(role.description)
    out["grants"] = {k: describe_grant(g) for k, g in role.grants.items()}
    return out


def describe_match_rule(rule: MatchRule) -> dict[str, Any]:
    out: dict[str, Any] = {"rule": rule.name, "action": rule.action,
                           "keys": [{"field": k.field, "normalise": k.normalise}
                                    for k in rule.keys]}
    if rule.when is not None:
        out["when"] = thaw(rule.when)
    return out


def describe_transition(transition: Transition) -> dict[str, Any]:
    out: dict[str, Any] = {"from": list(transition.from_states), "to": transition.to,
                           "label": text(transition.label)}
    optional = {
        "roles": list(transition.roles) or None, "when": thaw(transition.when),
        "requires": list(transition.requires) or None,
        "approval": {"by": transition.approval.by, "roles": list(transition.approval.roles),
                     "count": transition.approval.count, "levels": transition.approval.levels}
        if transition.approval else None,
        "actions": thaw(transition.actions) or None,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    return out


def describe_workflow(workflow: Workflow) -> dict[str, Any]:
    """A workflow as one scope sees it: states (final ones marked) and transitions."""
    return {"label": text(workflow.label), "field": workflow.field, "origin": workflow.origin,
            "initial": workflow.initial,
            "states": {s.name: {"label": text(s.label), **({"final": True} if s.final else {})}
                       for s in workflow.states},
            "transitions": {t.name: describe_transition(t) for t in workflow.transitions}}


def describe_trigger(trigger: Trigger) -> Any:
    """A trigger as YAML would write it."""
    if trigger.kind == "changed":
        return {"changed": list(trigger.fields)}
    if trigger.kind == "transitioned":
        return {"transitioned": list(trigger.transitions) or "*"}
    if trigger.kind == "schedule":
        return {"schedule": trigger.cron}
    if trigger.kind == "after":
        return {"after": {"field": trigger.field, "delay": format_duration(trigger.delay)}}
    return trigger.kind


def describe_rule(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"label": text(rule.label), "origin": rule.origin,
                           "enabled": rule.enabled, "trigger": describe_trigger(rule.trigger)}
    if rule.when is not None:
        out["when"] = thaw(rule.when)
    out["do"] = thaw(rule.actions)
    return out


def describe_calendar(calendar: Calendar) -> dict[str, Any]:
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    return {"label": text(calendar.label), "timezone": calendar.timezone,
            "hours": {days[d]: [f"{a}-{b}" for a, b in spans]
                      for d, spans in calendar.hours.items()},
            "holidays": list(calendar.holidays)}


def describe_sla(policy: SlaPolicy) -> dict[str, Any]:
    """A policy with its targets written back as durations (`default` for the rest)."""
    out: dict[str, Any] = {"label": text(policy.label), "origin": policy.origin,
                           "calendar": policy.calendar, "warn_at": policy.warn_at}
    optional = {"by": policy.by, "when": thaw(policy.when),
                "pause_when": thaw(policy.pause_when)}
    out.update({k: v for k, v in optional.items() if v is not None})
    out["clocks"] = {
        c.name: {"stop": thaw(c.stop),
                 "targets": {k or "default": format_duration(v) for k, v in c.targets.items()},
                 **({"start": thaw(c.start)} if c.start is not None else {}),
                 **({"field": c.field} if c.field else {})}
        for c in policy.clocks}
    if policy.escalations:
        out["escalations"] = [{"at": e.at, "levels_up": e.levels_up, "do": thaw(e.actions)}
                              for e in policy.escalations]
    return out
