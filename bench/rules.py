"""Benchmark: what automation rules cost a write, and a time-relative sweep at scale.

1. **Record creation with 20 active rules beside none**, same run, interleaved, on
   SQLite and PostgreSQL: `bench.lead` has 20 rules of every trigger kind (created with
   conditions few records meet, one through a reference; changed; updated; deleted;
   two time-relative rules, so every creation writes a timer; two schedules), and
   `bench.plain` has the same fields and none. Each timed batch creates records through
   the record service as the system, events delivered (the outbox rows, the timers and
   the hand-off to the job queue are in the figure; running the actions is not, it
   happens in the background). Target: at most 1.25 times the time without rules.
2. **A sweep over 1,000,000 records that finds 10,000 due** (PostgreSQL): a rule "3 days
   after created_at, while status is new" with a timer per record; the clock is set so
   10,000 timers are due, of which 9,000 records still match (the others are dropped).
   Timed: `sweep_tenant` (timers → runs in one set-based statement, the timers deleted,
   the runs handed out as jobs). Baseline: the same INSERT ... SELECT and DELETE written
   by hand. Target: ≤ 2 s. Also shown: seeding the million timers when the rule is new.

Last line: one JSON object, ``{"rules_overhead_ratio": ..., "sweep_s": ...}`` (the ratio
is the larger of the two backends'; per-backend figures follow).

    .venv/bin/python bench/rules.py [--records 1000000] [--due 10000] [--batch 200]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import ScratchPostgres, fmt_seconds, machine, median, print_json_line, print_table

from metacrm.engines.rules import sweep_tenant
from metacrm.engines.rules.tables import RUNS, TIMERS
from metacrm.platform.records import Actor, RecordService
from metacrm.platform.runtime import Platform
from metacrm.platform.settings import Settings
from metacrm.platform.systables import runtime_system_tables

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "metacrm_bench_rules"
SLUG = "bench"
SWEEP_SLUG = "sweep"
SEED = 20241126
TARGET_RATIO = 1.25
TARGET_SWEEP = 2.0
CITIES = ["Taipei", "Tainan", "Shanghai", "Beijing", "Hsinchu", "Kaohsiung", "Taichung",
          "Suzhou"]
SOURCES = ["web", "referral", "event", "cold_call", "partner"]

FIELDS = """
fields:
  company: {type: string, max_length: 200, required: true}
  contact_name: {type: string, max_length: 120}
  email: {type: email, index: true}
  city: {type: string, max_length: 100}
  source: {type: enum, options: [web, referral, event, cold_call, partner], default: web}
  status: {type: enum, options: [new, contacted, qualified, lost], default: new}
  score: {type: integer, min: 0, max: 100}
  expected_value: {type: money, currency: TWD}
  follow_up_on: {type: date}
  note: {type: string, max_length: 200}
  account: {type: reference, to: account}
"""


def _rule(name: str, trigger: str, when: str | None, do: str) -> str:
    return "\n".join([f"rule: {name}", "entity: lead", f"trigger: {trigger}",
                      *([f"when: {when}"] if when else []), f"do: [{do}]"]) + "\n"


TASK = '{create_task: {title: "Follow up {{ record.company }}", due_in: 1d}}'
NOTE = '{set: {note: "{{ record.company }}: automated"}}'
MAIL = '{notify: {channel: email, to: owner, subject: "{{ record.company }}", body: hi}}'
HOOK = "{webhook: {url: 'http://127.0.0.1:9/hook', secret: s}}"
RULES = {  # 20 rules, every trigger kind; on a creation few conditions hold
    "hot_lead": ("created", "{field: score, op: gte, value: 95}", NOTE),
    "event_lead": ("created", "{all: [{field: source, op: eq, value: event}, "
                   "{field: score, op: gte, value: 80}]}", TASK),
    "partner_lead": ("created", "{field: source, op: eq, value: partner}", MAIL),
    "gold_account": ("created", "{field: account.tier, op: eq, value: gold}", TASK),
    "big_deal": ("created", "{field: expected_value, op: gte, value: 1000000}", HOOK),
    "no_contact": ("created", "{all: [{field: email, op: is_empty, value: true}, "
                   "{field: contact_name, op: is_empty, value: true}]}", NOTE),
    "taipei_route": ("created", "{field: city, op: eq, value: Taipei}",
                     "{assign: {unit: taipei_team}}"),
    "qualified": ("{changed: [status]}", "{field: status, op: eq, value: qualified}", TASK),
    "lost": ("{changed: [status]}", "{field: status, op: eq, value: lost}", NOTE),
    "score_jump": ("{changed: [score]}", "{field: score, op: gte, value: 80}", MAIL),
    "email_changed": ("{changed: [email]}", None, NOTE),
    "value_changed": ("{changed: [expected_value]}",
                      "{field: expected_value, op: gte, value: 100000}", HOOK),
    "contacted": ("updated", "{field: status, op: eq, value: contacted}", NOTE),
    "reopened": ("updated", "{field: status, op: eq, value: new}", NOTE),
    "deleted": ("deleted", None, HOOK),
    "source_changed": ("{changed: [source]}", None, NOTE),
    "stale_lead": ("{after: {field: created_at, delay: 3d}}",
                   "{field: status, op: eq, value: new}", TASK),
    "follow_up": ("{after: {field: follow_up_on, delay: -1d}}", None, MAIL),
    "nightly": ('{schedule: "0 2 * * *"}', "{field: status, op: eq, value: lost}", NOTE),
    "weekly": ('{schedule: "0 9 * * 1"}', "{field: status, op: eq, value: qualified}", MAIL),
}

LIBRARY = {
    "metadata/modules/bench/module.yaml": "module: bench\nowner: bench-team\n",
    "metadata/modules/bench/entities/account.yaml":
        "entity: account\nfields:\n  name: {type: string, required: true}\n"
        "  tier: {type: enum, options: [gold, silver, bronze], default: bronze}\n",
    "metadata/modules/bench/entities/task.yaml":
        "entity: task\nfields:\n  title: {type: string, required: true}\n"
        "  assignee: {type: user}\n  due_at: {type: datetime}\n"
        "  lead: {type: reference, to: lead}\n",
    "metadata/modules/bench/entities/lead.yaml": "entity: lead\n" + FIELDS,
    "metadata/modules/bench/entities/plain.yaml": "entity: plain\n" + FIELDS,
    **{f"metadata/modules/bench/rules/{name}.yaml": _rule(name, *spec)
       for name, spec in RULES.items()},
    f"tenants/{SLUG}/tenant.yaml": f"tenant: {SLUG}\nmodules: [bench]\n"
                                   "timezone: Asia/Shanghai\n",
    "metadata/modules/sweep/module.yaml": "module: sweep\nowner: bench-team\n",
    "metadata/modules/sweep/entities/lead.yaml":
        "entity: lead\nfields:\n  company: {type: string, required: true}\n"
        "  status: {type: enum, options: [new, contacted], default: new}\n",
    "metadata/modules/sweep/rules/stale.yaml":
        "rule: stale\nentity: lead\ntrigger: {after: {field: created_at, delay: 3d}}\n"
        "when: {field: status, op: eq, value: new}\ndo: [{set: {status: contacted}}]\n",
    f"tenants/{SWEEP_SLUG}/tenant.yaml": f"tenant: {SWEEP_SLUG}\nmodules: [sweep]\n"
                                         "timezone: Asia/Shanghai\n",
}


def write_library(root: Path) -> None:
    for relative, text in LIBRARY.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, "utf-8")


class Results:
    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        self.figures: dict[str, Any] = {}
        self.notes: list[str] = []
        self.failures: list[str] = []


# -- 1. the cost of rules on a write ------------------------------------------------------------

def lead_values(rng: random.Random) -> dict[str, Any]:
    values: dict[str, Any] = {
        "company": f"Company {rng.randrange(10**6)}", "city": rng.choice(CITIES),
        "source": rng.choice(SOURCES[:4]), "score": rng.randrange(101),
        "expected_value": str(rng.randrange(200_000))}
    if rng.random() < 0.9:
        values["contact_name"] = f"Contact {rng.randrange(10**5)}"
        values["email"] = f"c{rng.randrange(10**7)}@example.com"
    if rng.random() < 0.2:
        values["follow_up_on"] = (dt.date.today() + dt.timedelta(days=rng.randrange(1, 30))
                                  ).isoformat()
    return values


def time_batches(platform: Platform, batch: int, rounds: int, warmup: int
                 ) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per-record seconds (wall and CPU) of each batch, with rules and without."""
    runtime = platform.runtime(SLUG)
    service = RecordService(runtime, Actor(), emit=platform.emit, operators=platform.operators)
    rng = random.Random(SEED)
    out: dict[str, tuple[list[float], list[float]]] = {"bench.lead": ([], []),
                                                       "bench.plain": ([], [])}

    def one(entity: str, timed: bool) -> None:
        rows = [lead_values(rng) for _ in range(batch)]
        cpu, start = time.process_time(), time.perf_counter()
        for values in rows:
            service.create(entity, values)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        if timed:
            out[entity][0].append(wall / batch)
            out[entity][1].append(cpu / batch)

    for index in range(warmup + rounds):
        order = ("bench.lead", "bench.plain") if index % 2 else ("bench.plain", "bench.lead")
        for entity in order:
            one(entity, index >= warmup)
    return out["bench.lead"][0], out["bench.lead"][1], out["bench.plain"][0], \
        out["bench.plain"][1]


def creation_leg(root: Path, label: str, url: str | None, args: argparse.Namespace,
                 res: Results) -> None:
    platform = Platform(Settings(root, root / f"var-{label}", url))
    try:
        report = platform.create_tenant(SLUG)
        if not report.ok:
            raise RuntimeError(f"create_tenant failed: {report.format()}")
        rules = platform.runtime(SLUG).registry.scope(None).rules_for("bench.lead")
        if len(rules) != len(RULES):
            raise RuntimeError(f"{len(rules)} rules compiled, expected {len(RULES)}")
        lead_wall, lead_cpu, plain_wall, plain_cpu = time_batches(
            platform, args.batch, args.rounds, args.warmup)
        # each round times both entities back to back: the median of the rounds' ratios
        # is steadier on a busy machine than a ratio of medians
        ratio = median([a / b for a, b in zip(lead_wall, plain_wall, strict=True)])
        cpu_ratio = median([a / b for a, b in zip(lead_cpu, plain_cpu, strict=True)])
        res.figures[f"rules_overhead_ratio_{label}"] = ratio
        res.figures[f"rules_overhead_cpu_ratio_{label}"] = cpu_ratio
        status = "ok" if ratio <= TARGET_RATIO else "MISSED"
        res.rows.append([f"{label}: create, 20 rules", fmt_seconds(median(lead_wall)),
                         fmt_seconds(median(lead_cpu)), "", ""])
        res.rows.append([f"{label}: create, no rules (baseline)",
                         fmt_seconds(median(plain_wall)), fmt_seconds(median(plain_cpu)),
                         "", ""])
        res.rows.append([f"{label}: ratio (median of the rounds' ratios)", f"{ratio:.3f}",
                         f"{cpu_ratio:.3f}", f"≤ {TARGET_RATIO}", status])
        runtime = platform.runtime(SLUG)
        system = runtime_system_tables(runtime)
        with runtime.connect() as connection:
            runs = connection.execute(sa.select(sa.func.count()).select_from(
                system.table(RUNS))).scalar()
            timers = connection.execute(sa.select(sa.func.count()).select_from(
                system.table(TIMERS))).scalar()
            leads = connection.execute(sa.select(sa.func.count()).select_from(
                runtime.tables.by_entity["bench.lead"])).scalar()
        res.notes.append(f"{label}: {leads:,} leads made {runs:,} runs and {timers:,} timers "
                         f"({runs / leads:.2f} runs per creation)")
        print(f"  {label}: per creation {fmt_seconds(median(lead_wall))} with 20 rules, "
              f"{fmt_seconds(median(plain_wall))} without: ratio {ratio:.3f} "
              f"(CPU {cpu_ratio:.3f})")
    finally:
        platform.close()


# -- 2. the sweep --------------------------------------------------------------------------------

def sweep_leg(root: Path, url: str, args: argparse.Namespace, res: Results) -> None:
    platform = Platform(Settings(root, root / "var-sweep", url))
    try:
        report = platform.create_tenant(SWEEP_SLUG)
        if not report.ok:
            raise RuntimeError(f"create_tenant failed: {report.format()}")
        runtime = platform.runtime(SWEEP_SLUG)
        system = runtime_system_tables(runtime)
        leads = runtime.tables.by_entity["sweep.lead"]
        base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        t0 = time.perf_counter()
        load_leads(runtime, leads, args.records, base)
        load_s = time.perf_counter() - t0
        # record i was created at base + i seconds; every tenth due one is no longer new
        platform.clock = lambda: base + dt.timedelta(days=3)
        t0 = time.perf_counter()
        seeded = sweep_tenant(platform, SWEEP_SLUG, enqueue=False).seeded
        seed_s = time.perf_counter() - t0
        print(f"  pg: {args.records:,} leads loaded in {load_s:.1f} s; {seeded:,} timers "
              f"seeded in {seed_s:.2f} s")
        res.rows.append([f"pg: seed {seeded:,} timers (a new rule)", fmt_seconds(seed_s),
                         "", "(info)", ""])
        res.figures["seed_s"] = seed_s
        due_at = base + dt.timedelta(days=3, seconds=args.due + 0.5)
        platform.clock = lambda: due_at
        ours, hand, fired, dropped = [], [], 0, 0
        for _ in range(args.sweeps):
            reset_due(runtime, system, leads, base, args.due)
            start = time.perf_counter()
            report = sweep_tenant(platform, SWEEP_SLUG)
            ours.append(time.perf_counter() - start)
            fired, dropped = report.timers_fired, report.timers_dropped
            reset_due(runtime, system, leads, base, args.due)
            hand.append(hand_written(runtime, system, leads, due_at))
        sweep_s = median(ours)
        res.figures["sweep_s"] = sweep_s
        res.figures["sweep_baseline_s"] = median(hand)
        res.figures["sweep_fired"] = fired
        res.figures["sweep_dropped"] = dropped
        status = "ok" if sweep_s <= TARGET_SWEEP else "MISSED"
        res.rows.append([f"pg: sweep {args.records:,} records, {args.due:,} due "
                         f"({fired:,} fired, {dropped:,} dropped)", fmt_seconds(sweep_s), "",
                         f"≤ {TARGET_SWEEP:.0f} s", status])
        res.rows.append(["pg: the same statements by hand (baseline)",
                         fmt_seconds(median(hand)), "", "", ""])
        print(f"  pg: sweep {fmt_seconds(sweep_s)} ({fired:,} runs, {dropped:,} dropped); "
              f"by hand {fmt_seconds(median(hand))}")
    finally:
        platform.close()


def load_leads(runtime: Any, leads: sa.Table, records: int, base: dt.datetime) -> None:
    series = sa.func.generate_series(1, records).table_valued("i").render_derived()
    i = series.c.i
    created = sa.literal(base, sa.DateTime(timezone=True)) + sa.func.make_interval(
        0, 0, 0, 0, 0, 0, i)
    status = sa.case((i % 10 == 0, "contacted"), else_="new")
    with runtime.begin() as connection:
        connection.execute(leads.insert().from_select(
            ["company", "status", "created_at", "updated_at", "row_version"],
            sa.select(sa.literal("Company ") + sa.cast(i, sa.String), status, created,
                      created, sa.literal(1))))
        connection.exec_driver_sql("ANALYZE")


def reset_due(runtime: Any, system: Any, leads: sa.Table, base: dt.datetime, due: int
              ) -> None:
    """Delete the runs and put back the timers of the first `due` records (untimed)."""
    from sqlalchemy.dialects import postgresql

    timers, runs = system.table(TIMERS), system.table(RUNS)
    due_at = leads.c.created_at + sa.literal_column("interval '3 days'")
    select = sa.select(sa.literal("sweep.stale"), sa.literal(""), sa.literal("sweep.lead"),
                       leads.c.id, due_at,
                       sa.cast(sa.func.extract("epoch", due_at), sa.BigInteger)).where(
        leads.c.id <= due)
    with runtime.begin() as connection:
        connection.execute(runs.delete())
        connection.execute(postgresql.insert(timers).from_select(
            ["rule", "scope", "entity", "record_id", "due_at", "due_epoch"], select
        ).on_conflict_do_nothing(index_elements=["rule", "record_id"]))
        connection.exec_driver_sql("ANALYZE")


def hand_written(runtime: Any, system: Any, leads: sa.Table, now: dt.datetime) -> float:
    """The sweep's work written by hand: one INSERT ... SELECT and one DELETE."""
    runs = system.table(RUNS)
    start = time.perf_counter()
    with runtime.begin() as connection:
        connection.exec_driver_sql("SET LOCAL search_path TO tenant_sweep")
        connection.execute(sa.text(
            "INSERT INTO _metacrm_rule_runs (rule, scope, entity, record_id, trigger, "
            "dedup_key, status, attempts, next_attempt_at, depth, created_at) "
            "SELECT 'sweep.stale', '', 'sweep.lead', t.record_id, 'after', "
            "'sweep.stale|sweep.lead|' || t.record_id || '|t' || t.due_epoch, 'pending', 0, "
            ":now, 0, :now FROM _metacrm_rule_timers t JOIN " + leads.name + " r "
            "ON r.id = t.record_id WHERE t.rule = 'sweep.stale' AND t.due_at <= :now "
            "AND r.deleted_at IS NULL AND r.status = 'new' "
            "ON CONFLICT (dedup_key) DO NOTHING RETURNING id"), {"now": now}).all()
        connection.execute(sa.text("DELETE FROM _metacrm_rule_timers WHERE due_at <= :now"),
                           {"now": now})
    elapsed = time.perf_counter() - start
    with runtime.begin() as connection:
        connection.execute(runs.delete())
    return elapsed


# -- main ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000,
                        help="records in the sweep's table")
    parser.add_argument("--due", type=int, default=10_000, help="timers due at the sweep")
    parser.add_argument("--sweeps", type=int, default=3, help="timed sweeps")
    parser.add_argument("--batch", type=int, default=200, help="creations per timed batch")
    parser.add_argument("--rounds", type=int, default=30, help="timed batches per entity")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-pg", action="store_true", help="SQLite creation figures only")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    res = Results()
    pg = ScratchPostgres(os.environ.get("METACRM_BENCH_PG_URL", DEFAULT_PG_URL), BENCH_DB)
    backends: list[tuple[str, str | None]] = [("sqlite", None)]
    if args.no_pg:
        res.notes.append("PostgreSQL skipped (--no-pg)")
    elif pg.create():
        backends.append(("pg", pg.url))
    else:
        res.notes.append(pg.note or "PostgreSQL skipped")
    if args.keep:
        root = Path(args.keep).resolve()
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        temp = None
    else:
        temp = tempfile.TemporaryDirectory(prefix="metacrm-bench-rules-")
        root = Path(temp.name)
    print(f"machine: {machine()}")
    print(f"creation: {args.rounds} interleaved batches of {args.batch} per entity after "
          f"{args.warmup} warm-up; sweep: {args.records:,} records, {args.due:,} due, median "
          f"of {args.sweeps}")
    try:
        write_library(root)
        for label, url in backends:
            try:
                creation_leg(root, label, url, args, res)
                if label == "pg" and url is not None:
                    sweep_leg(root, url, args, res)
            except Exception as exc:
                import traceback

                traceback.print_exc()
                res.failures.append(f"{label}: {type(exc).__name__}: {exc}")
    finally:
        pg.drop()
        if temp is not None:
            temp.cleanup()
    print()
    print_table(["figure", "median", "CPU", "target", "status"], res.rows)
    for note in res.notes:
        print(f"note: {note}")
    for failure in res.failures:
        print(f"FAILED: {failure}")
    ratios = [v for k, v in res.figures.items() if k.startswith("rules_overhead_ratio_")]
    figures = {"rules_overhead_ratio": max(ratios) if ratios else None,
               "sweep_s": res.figures.get("sweep_s"),
               **{k: v for k, v in res.figures.items() if k != "sweep_s"}}
    print_json_line(figures)
    return 1 if res.failures else 0


if __name__ == "__main__":
    sys.exit(main())
