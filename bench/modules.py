"""Benchmark: customer master data on PostgreSQL — a CSV import of 1,000,000 customers beside
a raw COPY of the same file, a duplicate-candidate lookup among them, and the unified view
of a customer with 1,000 related records.

It writes one CSV of generated customers (names, e-mails, phones in mixed formats, 10%
companies; `--duplicates` of them repeat an earlier e-mail or phone), then in the same run:

- **copy**: PostgreSQL's own `COPY … FROM STDIN (FORMAT csv, HEADER)` of that file into a
  plain table with the same columns and types and no index (the floor: no validation, no
  audit, no keys);
- **import**: `metacrm.platform.importer` (what `metacrm import` runs) into
  `customer.customer`: every cell validated by the entity's schema fields, defaults and
  autonumbers, unique `external_id` checked, match keys for the three duplicate rules,
  review pairs, one audit row per record, the import log — committed batch by batch;
- **dedup**: the lookup a new customer's write does inside its transaction: its keys under
  the three rules, then the one indexed query on `_metacrm_match_keys` (median of 500
  lookups of random customers' values among the 1,000,000);
- **view360**: `GET /api/v1/customer/customer/<id>/360` through the real app (tenant
  dispatch, bearer token, permissions) for a customer with 400 contact points, 400 consent
  rows and 200 orders (median of 50 requests, every list capped at 20 with its count).

Last line: one JSON object with dedup_ms, view360_ms, import_rows_per_s, copy_rows_per_s
(and their ratio). PostgreSQL: ``$METACRM_BENCH_PG_URL`` (default the local server).

    .venv/bin/python bench/modules.py [--records 1000000] [--batch 2000]
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import ScratchPostgres, fmt_seconds, machine, print_json_line, print_table

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "metacrm_bench_modules"
SLUG = "bench"
COLUMNS = ["external_id", "display_name", "kind", "email", "phone", "city", "lifetime_value",
           "is_vip", "birthday"]
CITIES = ["上海", "北京", "台北", "Shanghai", "Beijing", "Taipei", "Hangzhou", "Suzhou",
          "Shenzhen", "Guangzhou", "Chengdu", "Wuhan", "Nanjing", "Tianjin", "Xiamen",
          "Kaohsiung", "Taichung", "Hsinchu", "Hong Kong", "Singapore"]
SURNAMES = ["Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou",
            "Xu", "Sun", "Ma", "Zhu", "Hu", "Guo", "He", "Lin", "Gao", "Luo", "林", "陳", "王"]
GIVEN = ["Wei", "Fang", "Na", "Min", "Jing", "Li", "Qiang", "Lei", "Jun", "Yang", "Yong",
         "Yan", "Jie", "Tao", "Ming", "Chao", "Xiu", "Xia", "Hui", "Ping", "小明", "美玲"]
WORDS = ["Global", "Trading", "Tech", "Star", "Dragon", "Pacific", "Golden", "River",
         "Harmony", "Bright", "Summit", "Ocean", "Jade", "Lotus", "Phoenix", "Orient"]
FORMS = ["Ltd", "Co., Ltd.", "Limited", "Inc", "有限公司", "股份有限公司", "Corp"]
LIBRARY_EXTRA = {
    "metadata/modules/bench/module.yaml": "module: bench\nowner: bench\ndepends: [customer]\n",
    "metadata/modules/bench/entities/order.yaml": (
        "entity: order\nfields:\n  customer: {type: reference, to: customer.customer, "
        "required: true}\n  amount: {type: money, currency: CNY, default: 0}\n"
        "  status: {type: enum, options: [open, paid], default: open}\n"),
    f"tenants/{SLUG}/tenant.yaml": (
        f"tenant: {SLUG}\nlocale: zh-Hant\ntimezone: Asia/Shanghai\n"
        "modules: [customer, bench]\n"),
}


# -- data ------------------------------------------------------------------------------------------

def phone_text(rng: random.Random, number: int) -> str:
    """A mainland mobile number written as people write them: E.164 half the time."""
    national = f"1{rng.choice('3456789')}{number:09d}"[:11]
    style = rng.random()
    if style < 0.5:
        return f"+86{national}"
    if style < 0.8:
        return f"{national[:3]} {national[3:7]} {national[7:]}"
    return f"{national[:3]}-{national[3:7]}-{national[7:]}"


def write_file(path: Path, records: int, duplicates: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    repeat = set(rng.sample(range(1000, records), min(duplicates, max(records - 1000, 0))))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for i in range(records):
            company = rng.random() < 0.1
            if company:
                name = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {i} {rng.choice(FORMS)}"
            else:
                name = f"{rng.choice(SURNAMES)} {rng.choice(GIVEN)}"
            email = f"c{i}@example.com"
            number = i
            if i in repeat:  # an e-mail or a phone of an earlier row, written differently
                earlier = rng.randrange(0, i)
                if rng.random() < 0.5:
                    email = f"C{earlier}@Example.com"
                else:
                    number = earlier
            birthday = "" if rng.random() < 0.5 else \
                f"19{rng.randint(50, 99)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            writer.writerow([f"EXT-{i:08d}", name, "company" if company else "person", email,
                             phone_text(rng, number), rng.choice(CITIES),
                             f"{rng.randint(0, 500000)}.{rng.randint(0, 99):02d}",
                             "true" if rng.random() < 0.05 else "false", birthday])


# -- the platform -------------------------------------------------------------------------------

def make_platform(root: Path, var: Path, database_url: str) -> Any:
    from metacrm.platform.runtime import Platform
    from metacrm.platform.settings import Settings

    shutil.copytree(ROOT / "metadata" / "modules" / "customer",
                    root / "metadata" / "modules" / "customer")
    for relative, text in LIBRARY_EXTRA.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, "utf-8")
    platform = Platform(Settings(root, var, database_url))
    report = platform.create_tenant(SLUG)
    if not report.ok:
        raise SystemExit(report.format())
    return platform


def raw_copy(pg: ScratchPostgres, path: Path) -> float:
    """COPY the file into a plain table of the same columns; returns seconds."""
    with pg.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS raw_customers")
        conn.execute("CREATE TABLE raw_customers (external_id varchar(64), "
                      "display_name varchar(200), kind varchar(32), email varchar(254), "
                      "phone varchar(32), city varchar(100), lifetime_value numeric(18, 2), "
                      "is_vip boolean, birthday date)")
        conn.commit()
        start = time.perf_counter()
        with conn.cursor() as cursor, path.open("rb") as handle, cursor.copy(
                "COPY raw_customers FROM STDIN (FORMAT csv, HEADER true)") as copy:
            while chunk := handle.read(1 << 20):
                copy.write(chunk)
        conn.commit()
        seconds = time.perf_counter() - start
        conn.execute("DROP TABLE raw_customers")
        conn.commit()
    return seconds


def run_import(platform: Any, path: Path, batch: int) -> Any:
    from metacrm.platform.importer import import_csv
    from metacrm.platform.records import Actor, RecordService

    runtime = platform.runtime(SLUG)
    service = RecordService(runtime, Actor(), emit=platform.emit, operators=platform.operators)
    done = [0]
    last = [time.perf_counter()]

    def progress(rows: int) -> None:
        done[0] += rows
        if time.perf_counter() - last[0] > 10:
            last[0] = time.perf_counter()
            print(f"  … {done[0]:,} rows", file=sys.stderr, flush=True)

    gc.collect()
    return import_csv(service, "customer.customer", path, batch_size=batch,
                      progress=progress, report=path.with_suffix(".errors.csv"))


def dedup_lookups(platform: Any, records: int, rounds: int = 500) -> list[float]:
    """Seconds per lookup: a random customer's values → keys → candidates (one query)."""
    from metacrm.engines.duplicates import entity_rules
    from metacrm.engines.duplicates import index as key_index
    from metacrm.platform.systables import runtime_system_tables

    runtime = platform.runtime(SLUG)
    system = runtime_system_tables(runtime)
    rules = entity_rules(runtime, "customer.customer")
    table = runtime.tables.by_entity["customer.customer"]
    rng = random.Random(11)
    ids = rng.sample(range(1, records + 1), min(rounds, records))
    times = []
    with runtime.connect() as connection:
        rows = {r["id"]: dict(r) for r in connection.execute(sa.select(
            table.c.id, table.c.email, table.c.phone, table.c.display_name, table.c.city,
            table.c.kind).where(table.c.id.in_(ids))).mappings()}
        for record_id in ids:
            values = rows[record_id]
            start = time.perf_counter()
            found = key_index.candidates(connection, system, "customer.customer",
                                         rules.keys(values), None)
            times.append(time.perf_counter() - start)
            assert record_id in found
    return times


def view360(platform: Any, settings: Any, related: int = 1000, rounds: int = 50) -> list[float]:
    """Seconds per GET …/360 for a customer with `related` records (through the app)."""
    from metacrm.platform.app import create_app
    from metacrm.platform.auth import create_user, issue_token, set_roles
    from metacrm.platform.records import Actor, RecordService

    runtime = platform.runtime(SLUG)
    with runtime.begin() as connection:
        user = create_user(connection, "bench-admin")
        set_roles(connection, user, ["administrator"])
        token = issue_token(connection, user, "bench")
    service = RecordService(runtime, Actor())
    customer = service.create("customer.customer", {"display_name": "Busy customer"})["id"]
    now = dt_now()
    base = {"created_at": now, "updated_at": now, "row_version": 1}
    with runtime.begin() as connection:
        connection.execute(runtime.tables.by_entity["customer.contact_point"].insert(), [
            {**base, "customer": customer, "channel": "email", "value": f"p{i}@example.com",
             "consent": False, "do_not_contact": False} for i in range(related * 2 // 5)])
        connection.execute(runtime.tables.by_entity["customer.consent"].insert(), [
            {**base, "customer": customer, "channel": "sms", "status": "granted", "at": now}
            for _ in range(related * 2 // 5)])
        connection.execute(runtime.tables.by_entity["bench.order"].insert(), [
            {**base, "customer": customer, "amount": i, "status": "open"}
            for i in range(related - 2 * (related * 2 // 5))])
    app = create_app(settings, platform)
    client = app.test_client()
    url = f"/t/{SLUG}/api/v1/customer/customer/{customer}/360"
    headers = {"Authorization": f"Bearer {token}"}
    first = client.get(url, headers=headers)
    assert first.status_code == 200, first.get_data(as_text=True)
    counts = {k: v["count"] for k, v in first.get_json()["related"].items()}
    assert sum(counts.values()) == related, counts
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        response = client.get(url, headers=headers)
        times.append(time.perf_counter() - start)
        assert response.status_code == 200
    return times


def dt_now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--duplicates", type=int, default=20_000,
                        help="rows repeating an earlier row's e-mail or phone")
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args()
    pg = ScratchPostgres(os.environ.get("METACRM_BENCH_PG_URL", DEFAULT_PG_URL), BENCH_DB)
    if not pg.create():
        raise SystemExit(pg.note)
    work = Path(tempfile.mkdtemp(prefix="metacrm-bench-modules-"))
    try:
        print(f"machine: {machine()}")
        path = work / "customers.csv"
        start = time.perf_counter()
        write_file(path, args.records, args.duplicates)
        print(f"wrote {args.records:,} rows ({path.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - start:.1f} s")
        copy_seconds = raw_copy(pg, path)
        print(f"raw COPY: {fmt_seconds(copy_seconds)}")
        platform = make_platform(work / "project", work / "var", pg.url)
        try:
            from metacrm.platform.settings import Settings

            settings = Settings(work / "project", work / "var", pg.url)
            result = run_import(platform, path, args.batch)
            print(f"import: {result.summary()}")
            if result.rejected:
                print(f"  first errors: {result.first_errors[:3]}")
            lookups = dedup_lookups(platform, result.created)
            views = view360(platform, settings)
        finally:
            platform.close()
        import_rate = result.created / result.seconds
        copy_rate = args.records / copy_seconds
        dedup_ms = statistics.median(lookups) * 1e3
        view_ms = statistics.median(views) * 1e3
        print()
        print_table(["measure", "ours", "baseline", "target"], [
            ["import rows/s (PostgreSQL)", f"{import_rate:,.0f}",
             f"{copy_rate:,.0f} (raw COPY)", "≥ 20,000"],
            ["import wall time", fmt_seconds(result.seconds), fmt_seconds(copy_seconds), ""],
            ["duplicate pairs queued", f"{result.pairs:,}", "", ""],
            ["dedup lookup among 1M (median)", f"{dedup_ms:.2f} ms",
             f"p95 {sorted(lookups)[int(len(lookups) * .95)] * 1e3:.2f} ms", "≤ 5 ms"],
            ["360 view, 1,000 related (median)", f"{view_ms:.1f} ms",
             f"p95 {sorted(views)[int(len(views) * .95)] * 1e3:.1f} ms", "≤ 50 ms"],
        ])
        print_json_line({"dedup_ms": dedup_ms, "view360_ms": view_ms,
                         "import_rows_per_s": import_rate, "copy_rows_per_s": copy_rate,
                         "import_vs_copy": import_rate / copy_rate})
    finally:
        pg.drop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
