"""Running rule runs: claim one, run its actions in order, log the outcome, retry or park.

A run is claimed by one guarded UPDATE (``status = 'pending'`` and due → ``running``), so
a job delivered twice, or two workers, run it once. Each action's result is saved as soon
as it finishes: a retry resumes at the action that failed and never repeats the ones
before it. A failure is retried with exponential backoff up to `max_attempts`, then the
run is *parked* for an administrator (``GET /api/v1/_automation/runs?status=parked``);
input that can never work (a bad template, a missing field) parks at once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
from typing import Any

import sqlalchemy as sa
from jinja2 import TemplateError

from ...metadata.ir import thaw
from ...platform.events import RecordEvent
from ...platform.records import Actor, Conflict, PreconditionFailed, RecordError, RecordService
from ...platform.systables import runtime_system_tables
from ..actions import ActionContext, ActionFailed, actions_of
from ..actions.support import describe_refusal
from .dispatch import jsonable
from .index import CompiledRule, rule_index
from .settings import RuleSettings, settings_for, utc_now
from .tables import RUNS

log = logging.getLogger(__name__)


class RunFailed(Exception):
    """One action of a run failed; `retryable` False parks the run at once."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def run_table(runtime: Any) -> sa.Table:
    return runtime_system_tables(runtime).table(RUNS)


def claim(connection: sa.Connection, runs: sa.Table, run_id: int, now: dt.datetime,
          lease: float) -> dict[str, Any] | None:
    """Take a pending run for this worker (None: someone else has it, or it is done). A
    first attempt is taken at once (a worker's clock may lag the writer's); a retry only
    once it is due, so a stale duplicate job cannot run it early."""
    due = sa.or_(runs.c.attempts == 0, runs.c.next_attempt_at <= now)  # first: at once
    row = connection.execute(runs.update().where(
        runs.c.id == run_id, runs.c.status == "pending", due)
        .values(status="running", attempts=runs.c.attempts + 1, started_at=now,
                lease_until=now + dt.timedelta(seconds=lease))
        .returning(*runs.c)).mappings().first()
    return dict(row) if row is not None else None


def execute_runs(platform: Any, slug: str, ids: list[int]) -> dict[int, str]:
    """Run each of `ids` that is pending and due; what became of each one."""
    runtime = platform.runtime(slug)
    return {run_id: execute_run(platform, runtime, run_id) for run_id in ids}


def execute_run(platform: Any, runtime: Any, run_id: int) -> str:
    """Claim and run one run; its status afterwards (``claimed elsewhere`` if not ours)."""
    runs = run_table(runtime)
    settings = settings_for(runtime)
    with runtime.begin() as connection:
        run = claim(connection, runs, run_id, utc_now(platform), settings.lease)
    if run is None:
        return "claimed elsewhere"
    rule = rule_index(runtime).get(run["scope"], run["rule"])
    if rule is None:
        return _finish(runtime, run, "skipped", error=f"rule {run['rule']} was removed or "
                       "disabled before this run started")
    results = list(run["results"] or [])
    try:
        _run_actions(platform, runtime, run, rule, results)
    except RunFailed as failure:
        return _failed(platform, runtime, run, results, settings, failure)
    log.info("rule %s ran on %s %s (run %s)", run["rule"], run["entity"], run["record_id"],
             run_id)
    return _finish(runtime, run, "done", results=results)


def _run_actions(platform: Any, runtime: Any, run: dict[str, Any], rule: CompiledRule,
                 results: list[Any]) -> None:
    if rule.error is not None:
        raise RunFailed(rule.error, retryable=False)
    actions = actions_of(platform)
    event = _event(runtime, run)
    record = _record(runtime, run)
    key = action_key(run)
    base = ActionContext(platform, runtime, run["entity"], record, f"rule:{run['rule']}",
                         key, run["depth"], event, run["actor"],
                         {"run_id": run["id"], "scope": run["scope"] or None,
                          "trigger": run["trigger"], "rule": rule.rule})
    specs = rule.rule.actions
    for position, spec in enumerate(specs):
        if position < len(results):  # done by an earlier attempt
            continue
        ((name, _),) = spec.items()
        context = dataclasses.replace(base, key=f"{key}#{position}")
        try:
            result = actions.run(context, thaw(spec))
        except ActionFailed as exc:
            raise RunFailed(f"action {position + 1} `{name}`: {exc}", exc.retryable) from exc
        except TemplateError as exc:
            raise RunFailed(f"action {position + 1} `{name}`: template error: {exc}",
                            False) from exc
        except (Conflict, PreconditionFailed) as exc:
            raise RunFailed(f"action {position + 1} `{name}`: {exc.detail}", True) from exc
        except RecordError as exc:
            raise RunFailed(f"action {position + 1} `{name}`: {describe_refusal(exc)}",
                            False) from exc
        except Exception as exc:  # a bug or an outage: retry, then park (never dropped)
            log.exception("rule %s: action %s failed", run["rule"], name)
            raise RunFailed(f"action {position + 1} `{name}`: {type(exc).__name__}: {exc}",
                            True) from exc
        results.append({"action": name, "result": jsonable(result)})
        _save_progress(runtime, run, results)
        if position + 1 < len(specs):  # later actions see what earlier ones changed
            base = dataclasses.replace(base, record=_record(runtime, run))


def action_key(run: dict[str, Any]) -> str:
    """The run's idempotency key for its actions (short enough for a delivery key): the
    same on every attempt, different for every run."""
    digest = hashlib.sha1(run["dedup_key"].encode(), usedforsecurity=False).hexdigest()[:12]
    return f"rule:{run['id']}:{digest}"


def _record(runtime: Any, run: dict[str, Any]) -> dict[str, Any]:
    service = RecordService(runtime, Actor(None, run["scope"] or None))
    try:
        return service.get(run["entity"], run["record_id"], include_deleted=True)
    except RecordError as exc:
        raise RunFailed(f"{run['entity']} {run['record_id']} cannot be read: {exc.detail}",
                        False) from exc


def _event(runtime: Any, run: dict[str, Any]) -> RecordEvent | None:
    """The triggering event as the outbox kept it (a creation: from the run's columns)."""
    detail = run["event"]
    if not detail:
        if run["trigger"] != "created":
            return None  # a timer or a schedule
        detail = {"kind": "created", "actor": run["actor"], "unit": run["scope"] or None,
                  "at": _utc(run["created_at"]).isoformat()}
    changes = {k: tuple(v) if isinstance(v, list) and len(v) == 2 else v
               for k, v in (detail.get("changes") or {}).items()}
    return RecordEvent(runtime.slug, run["entity"], run["record_id"], detail.get("kind", ""),
                       detail.get("actor"), dt.datetime.fromisoformat(detail["at"]),
                       runtime.version, {}, changes, run["depth"], detail.get("transition"),
                       detail.get("unit"))


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _save_progress(runtime: Any, run: dict[str, Any], results: list[Any]) -> None:
    runs = run_table(runtime)
    with runtime.begin() as connection:
        connection.execute(runs.update().where(runs.c.id == run["id"],
                                               runs.c.status == "running")
                           .values(results=results))


def _finish(runtime: Any, run: dict[str, Any], status: str, *, error: str | None = None,
            results: list[Any] | None = None) -> str:
    runs = run_table(runtime)
    now = utc_now(runtime.platform)
    with runtime.begin() as connection:
        connection.execute(runs.update().where(runs.c.id == run["id"]).values(
            status=status, finished_at=now, lease_until=None, last_error=error,
            results=results if results is not None else run["results"]))
    return status


def _failed(platform: Any, runtime: Any, run: dict[str, Any], results: list[Any],
            settings: RuleSettings, failure: RunFailed) -> str:
    attempts = run["attempts"]
    message = str(failure)[:4000]
    runs = run_table(runtime)
    now = utc_now(platform)
    if failure.retryable and attempts < settings.max_attempts:
        delay = settings.retry_delay(attempts)
        log.warning("rule %s on %s %s failed (attempt %s of %s), retrying in %ss: %s",
                    run["rule"], run["entity"], run["record_id"], attempts,
                    settings.max_attempts, delay, message)
        with runtime.begin() as connection:
            connection.execute(runs.update().where(runs.c.id == run["id"]).values(
                status="pending", next_attempt_at=now + dt.timedelta(seconds=delay),
                lease_until=None, last_error=message, results=results))
        return "pending"
    why = "after " + (f"{attempts} attempts" if failure.retryable else "a failure that a retry "
                      "cannot fix")
    log.error("rule %s on %s %s parked %s: %s", run["rule"], run["entity"], run["record_id"],
              why, message)
    return _finish(runtime, run, "parked", error=f"{message} (parked {why})", results=results)
