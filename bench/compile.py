"""Compiler benchmark: a 300-entity library compiled cold and warm, against parsing it.

Generates (deterministically, into a temporary folder) 10 modules x 30 entities x 30
fields with forms and views, a tenant `bench` with a tenant-wide overlay folder and one
business unit with its own, then measures in one process:

- cold_s   a brand-new ``Compiler(Library.at(tmp))`` plus ``compile_tenant("bench")``
- warm_s   ``compile_tenant("bench")`` again on the same Compiler, files unchanged
- parse_s  the baseline: PyYAML's C loader parsing every one of the same files
- ratio_to_parse = cold_s / parse_s

Run from the project root: ``.venv/bin/python bench/compile.py`` (``--profile`` adds a
per-pass breakdown and a cProfile listing of one cold compile). The last line printed
is one JSON object with the four figures. Exits 1 when the library does not compile.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _util import (
    GcTimer,
    PassTimer,
    fmt_seconds,
    machine,
    measure,
    median,
    print_json_line,
    print_table,
    spread,
    timed,
)

from metacrm.metadata import build, checks, compiler, loader, resolve, sources, validate
from metacrm.metadata.compiler import Compiler
from metacrm.metadata.library import Library

TENANT = "bench"
SEED = 20240601
TARGET_COLD_S = 1.5
TARGET_WARM_S = 0.050
TARGET_RATIO = 6.0

# -- the generated library ----------------------------------------------------------------

# name, English label, Chinese label, owning team, dependencies
MODULES: list[tuple[str, str, str, str, list[str]]] = [
    ("core", "Core data", "核心資料", "core-data", []),
    ("sales", "Sales", "銷售管理", "sales-ops", ["core"]),
    ("service", "Service desk", "客服中心", "service-desk", ["core", "sales"]),
    ("marketing", "Marketing", "行銷管理", "marketing-ops", ["core"]),
    ("loyalty", "Member & points", "會員積分", "loyalty-team", ["core", "marketing"]),
    ("billing", "Billing", "帳務管理", "finance-ops", ["core", "sales"]),
    ("inventory", "Inventory", "庫存管理", "supply-chain", ["core"]),
    ("logistics", "Logistics", "物流管理", "supply-chain", ["inventory", "billing"]),
    ("projects", "Projects", "專案管理", "pmo", ["core", "sales", "service"]),
    ("analytics", "Analytics", "分析報表", "bi-team", ["core", "sales", "marketing"]),
]

ENTITIES: list[tuple[str, str, str]] = [
    ("account", "Account", "帳戶"), ("contact", "Contact", "聯絡人"), ("lead", "Lead", "線索"),
    ("opportunity", "Opportunity", "商機"), ("quote", "Quote", "報價單"),
    ("sales_order", "Sales order", "銷售訂單"), ("invoice", "Invoice", "發票"),
    ("payment", "Payment", "付款"), ("product", "Product", "產品"),
    ("price_book", "Price book", "價目表"), ("campaign", "Campaign", "行銷活動"),
    ("segment", "Segment", "客群"), ("coupon", "Coupon", "優惠券"), ("ticket", "Ticket", "工單"),
    ("case_note", "Case note", "案件備註"), ("contract", "Contract", "合約"),
    ("asset", "Asset", "資產"), ("shipment", "Shipment", "出貨"),
    ("warehouse", "Warehouse", "倉庫"), ("supplier", "Supplier", "供應商"),
    ("store", "Store", "門市"), ("member", "Member", "會員"),
    ("point_ledger", "Point ledger", "點數帳"), ("visit", "Visit", "拜訪紀錄"),
    ("task_item", "Task", "待辦事項"), ("survey", "Survey", "問卷"),
    ("complaint", "Complaint", "客訴"), ("partner", "Partner", "合作夥伴"),
    ("territory", "Territory", "業務轄區"), ("subscription", "Subscription", "訂閱"),
]

STRINGS = [
    ("code", "Code", "代碼"), ("city", "City", "城市"), ("street", "Street", "街道"),
    ("district", "District", "行政區"), ("postal_code", "Postal code", "郵遞區號"),
    ("external_ref", "External reference", "外部編號"), ("department", "Department", "部門"),
    ("brand", "Brand", "品牌"), ("model_no", "Model number", "型號"),
    ("batch_no", "Batch number", "批號"), ("tax_id", "Tax ID", "統一編號"),
    ("nickname", "Nickname", "暱稱"), ("job_title", "Job title", "職稱"),
    ("company_name", "Company", "公司名稱"), ("sku", "SKU", "料號"),
    ("serial_no", "Serial number", "序號"), ("channel_name", "Channel", "通路名稱"),
]
OPTION_SETS: dict[str, list[tuple[str, str, str]]] = {
    "status": [("new", "New", "新建"), ("open", "Open", "處理中"), ("pending", "Pending", "待處理"),
               ("done", "Done", "已完成"), ("closed", "Closed", "已關閉"),
               ("cancelled", "Cancelled", "已取消")],
    "stage": [("prospecting", "Prospecting", "開發中"), ("qualified", "Qualified", "已確認"),
              ("proposal", "Proposal", "提案"), ("won", "Won", "成交"), ("lost", "Lost", "失敗")],
    "priority": [("low", "Low", "低"), ("medium", "Medium", "中"), ("high", "High", "高"),
                 ("urgent", "Urgent", "緊急")],
    "category": [("standard", "Standard", "標準"), ("premium", "Premium", "進階"),
                 ("enterprise", "Enterprise", "企業"), ("trial", "Trial", "試用")],
    "source": [("web", "Web", "網站"), ("referral", "Referral", "推薦"), ("event", "Event", "活動"),
               ("cold_call", "Cold call", "陌生開發"), ("partner", "Partner", "合作夥伴")],
    "tier": [("bronze", "Bronze", "銅級"), ("silver", "Silver", "銀級"), ("gold", "Gold", "金級"),
             ("platinum", "Platinum", "白金級")],
    "region_code": [("north", "North", "北區"), ("central", "Central", "中區"),
                    ("south", "South", "南區"), ("east", "East", "東區"),
                    ("overseas", "Overseas", "海外")],
    "rating": [("hot", "Hot", "熱"), ("warm", "Warm", "溫"), ("cold", "Cold", "冷")],
    "payment_terms": [("prepaid", "Prepaid", "預付"), ("net_30", "Net 30", "月結30天"),
                      ("net_60", "Net 60", "月結60天"), ("cod", "Cash on delivery", "貨到付款")],
    "lifecycle": [("prospect", "Prospect", "潛在"), ("active", "Active", "活躍"),
                  ("dormant", "Dormant", "沉睡"), ("churned", "Churned", "流失")],
    "kind": [("person", "Person", "個人"), ("company", "Company", "公司"),
             ("government", "Government", "政府機關")],
}
ENUM_LABELS = {
    "status": ("Status", "狀態"), "stage": ("Stage", "階段"), "priority": ("Priority", "優先級"),
    "category": ("Category", "類別"), "source": ("Source", "來源"), "tier": ("Tier", "等級"),
    "region_code": ("Region", "區域"), "rating": ("Rating", "評等"),
    "payment_terms": ("Payment terms", "付款條件"), "lifecycle": ("Lifecycle", "生命週期"),
    "kind": ("Kind", "類型"),
}
INTEGERS = [("quantity", "Quantity", "數量", 0, 100000), ("score", "Score", "分數", 0, 100),
            ("visits", "Visits", "來訪次數", 0, 10000), ("seats", "Seats", "席位數", 1, 5000),
            ("days_open", "Days open", "開啟天數", 0, 3650),
            ("probability", "Probability", "成交機率", 0, 100),
            ("headcount", "Headcount", "人數", 0, 1000000),
            ("points", "Points", "點數", 0, 10000000)]
MONEY = [("amount", "Amount", "金額"), ("budget", "Budget", "預算"), ("revenue", "Revenue", "營收"),
         ("cost", "Cost", "成本"), ("discount", "Discount", "折扣金額"),
         ("credit_limit", "Credit limit", "信用額度"), ("balance", "Balance", "餘額"),
         ("tax_amount", "Tax", "稅額")]
DATES = [("start_date", "Start date", "開始日期"), ("end_date", "End date", "結束日期"),
         ("due_date", "Due date", "到期日"), ("signed_on", "Signed on", "簽約日"),
         ("closed_on", "Closed on", "結案日"), ("renewal_date", "Renewal date", "續約日"),
         ("last_contacted", "Last contacted", "最後聯絡日")]
EMAILS = [("email", "E-mail", "電子郵件"), ("billing_email", "Billing e-mail", "帳單信箱"),
          ("contact_email", "Contact e-mail", "聯絡信箱")]
PHONES = [("phone", "Phone", "電話"), ("mobile", "Mobile", "手機")]
BOOLEANS = [("is_active", "Active", "啟用"), ("is_vip", "VIP", "貴賓"),
            ("opted_in", "Opted in", "同意行銷"), ("is_key", "Key account", "重點客戶"),
            ("do_not_call", "Do not call", "勿電聯"), ("verified", "Verified", "已驗證")]
TEXTS = [("notes", "Notes", "備註"), ("remarks", "Remarks", "說明")]
CURRENCIES = ["CNY", "TWD", "USD", "HKD"]

# fields the overlays add: tenant-wide, then the business unit's (never clashing)
TENANT_ADDED = [
    ("line_id", "string", "LINE ID", "LINE帳號"), ("wechat_id", "string", "WeChat ID", "微信號"),
    ("vat_number", "string", "VAT number", "稅籍編號"),
    ("legacy_code", "string", "Legacy code", "舊系統代碼"),
    ("sales_region", "enum", "Sales region", "業務區域"),
    ("credit_score", "integer", "Credit score", "信用分數"),
    ("invoice_email", "email", "Invoice e-mail", "發票信箱"),
    ("approved_budget", "money", "Approved budget", "核定預算"),
    ("audit_date", "date", "Audit date", "稽核日期"),
    ("is_strategic", "boolean", "Strategic", "策略客戶"),
]
UNIT_ADDED = [
    ("store_code", "string", "Home store", "所屬門市"),
    ("membership_level", "enum", "Membership", "會員等級"),
    ("visit_count", "integer", "Store visits", "到店次數"),
    ("last_visit", "date", "Last visit", "最近到店"),
    ("coupon_balance", "money", "Coupon balance", "券餘額"),
    ("referral_code", "string", "Referral code", "推薦碼"),
    ("kiosk_email", "email", "Kiosk e-mail", "門市信箱"),
    ("floor_staff", "string", "Floor staff", "樓面人員"),
    ("receipt_opt_in", "boolean", "E-receipt", "電子發票"),
]

_PLAIN = re.compile(r"^[A-Za-z_\u3400-\u9fff][A-Za-z0-9_ .\-\u3400-\u9fff]*$")
_KEYWORDS = frozenset({"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"})


def q(text: str) -> str:
    """A YAML scalar: plain when that is unambiguous, otherwise double-quoted."""
    if _PLAIN.match(text) and text == text.strip() and text.lower() not in _KEYWORDS:
        return text
    return json.dumps(text, ensure_ascii=False)


def flow(value: Any) -> str:
    """One value in YAML flow style: {a: 1, b: [x, y]}."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return q(str(value))


def text(en: str, zh: str) -> dict[str, str]:
    return {"en": en, "zh-Hant": zh}


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate


class LibraryWriter:
    """Builds the library as Python values first, then writes it as hand-shaped YAML."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        # module -> entity -> {"spec": entity spec, "fields": {name: spec}}
        self.model: dict[str, dict[str, dict[str, Any]]] = {}
        self.files: list[Path] = []

    # -- model ------------------------------------------------------------------------------

    def build(self) -> None:
        for module, *_rest, depends in MODULES:
            self.model[module] = {}
            for noun, en, zh in ENTITIES:
                self.model[module][noun] = self._entity(module, noun, en, zh, depends)

    def _entity(self, module: str, noun: str, en: str, zh: str,
                depends: list[str]) -> dict[str, Any]:
        rng = self.rng
        taken: set[str] = {"name"}
        fields: dict[str, dict[str, Any]] = {
            "name": {"type": "string", "max_length": 200, "required": True,
                     "label": text("Name", "名稱")}}
        plan = (["string"] * 6 + ["enum"] * 5 + ["integer"] * 3 + ["money"] * 3 + ["date"] * 3
                + ["reference"] * 3 + ["email", "phone", "text"] + ["boolean"] * 3)
        with_formula = rng.random() < 0.35
        rng.shuffle(plan)
        for kind in plan:
            name, spec = self._field(kind, module, noun, depends, taken)
            fields[name] = spec
        if with_formula:  # a formula instead of the last boolean, placed at the end
            fields.pop(next(n for n, s in reversed(fields.items()) if s["type"] == "boolean"))
            name, spec = self._formula(fields, taken)
            fields[name] = spec
        strings = [n for n, s in fields.items() if s["type"] == "string" and n != "name"]
        enums = [n for n, s in fields.items() if s["type"] == "enum"]
        plural = f"{en[:-1]}ies" if en.endswith("y") else f"{en}s"
        spec: dict[str, Any] = {"entity": noun, "label": text(en, zh),
                                "plural_label": text(plural, zh)}
        spec["title"] = "{name}" if rng.random() < 0.5 else f"{{name}} · {{{strings[0]}}}"
        if rng.random() < 0.33:
            prefix = "".join(w[0] for w in noun.split("_")).upper() + noun[:2].upper()
            spec["naming"] = {"autonumber": f"{prefix}-{{YYYY}}-{{#####}}"}
        spec["search"] = ["name", strings[0]]
        if rng.random() < 0.4:
            spec["indexes"] = [{"fields": [enums[0], strings[1]]}]
        if rng.random() < 0.5:
            spec["description"] = {"en": f"{en} records kept by the {module} module."}
        return {"spec": spec, "fields": fields}

    def _pick(self, pool: list[Any], taken: set[str]) -> Any:
        """A random pool entry whose name is not used yet in this entity (if any is left)."""
        fresh = [item for item in pool if item[0] not in taken]
        return self.rng.choice(fresh or pool)

    def _field(self, kind: str, module: str, noun: str, depends: list[str],
               taken: set[str]) -> tuple[str, dict[str, Any]]:
        rng, pick = self.rng, self._pick
        label: dict[str, str]
        if kind == "string":
            name, en, zh = pick(STRINGS, taken)
            spec: dict[str, Any] = {"type": "string", "max_length": rng.choice([20, 64, 100, 200])}
            if name == "code" and "code" not in taken:
                spec["unique"] = True
            if rng.random() < 0.2:
                spec["index"] = True
            if rng.random() < 0.15:
                spec["help"] = {"en": f"As printed on the {en.lower()} document.",
                                "zh-Hant": f"請依{zh}文件填寫"}
        elif kind == "enum":
            name = pick([(n,) for n in OPTION_SETS], taken)[0]
            en, zh = ENUM_LABELS[name]
            choices = OPTION_SETS[name]
            count = rng.randint(3, min(6, len(choices)))
            options = [{"value": v, "label": text(oe, oz)} for v, oe, oz in choices[:count]]
            spec = {"type": "enum"}
            if rng.random() < 0.5:
                spec["required"] = True
            spec["default"] = options[0]["value"]
            spec["options"] = options
        elif kind == "integer":
            name, en, zh, low, high = pick(INTEGERS, taken)
            spec = {"type": "integer", "min": low, "max": high}
            if rng.random() < 0.3:
                spec["default"] = low
        elif kind == "money":
            name, en, zh = pick(MONEY, taken)
            spec = {"type": "money", "currency": rng.choice(CURRENCIES), "min": 0}
            if rng.random() < 0.4:
                spec["default"] = 0
        elif kind == "date":
            name, en, zh = pick(DATES, taken)
            spec = {"type": "date"}
            if rng.random() < 0.2:
                spec["default"] = "today"
        elif kind == "reference":
            target_module = module if rng.random() < 0.6 or not depends else rng.choice(depends)
            target, ten, tzh = rng.choice(ENTITIES)
            name, en, zh = f"{target}_ref" if target == noun else target, ten, tzh
            to = target if target_module == module and rng.random() < 0.5 \
                else f"{target_module}.{target}"
            spec = {"type": "reference", "to": to,
                    "on_delete": rng.choice(["restrict", "restrict", "set_null", "cascade"])}
            if rng.random() < 0.3:
                spec["index"] = True
        elif kind == "email":
            name, en, zh = pick(EMAILS, taken)
            spec = {"type": "email", "max_length": 254, "index": rng.random() < 0.5}
        elif kind == "phone":
            name, en, zh = pick(PHONES, taken)
            spec = {"type": "phone", "max_length": 32,
                    "help": {"en": "E.164, e.g. +886912345678"}}
        elif kind == "text":
            name, en, zh = pick(TEXTS, taken)
            spec = {"type": "text"}
        else:
            name, en, zh = pick(BOOLEANS, taken)
            spec = {"type": "boolean", "default": False}
        label = text(en, zh)
        spec["label"] = label
        return _unique(name, taken), spec

    def _formula(self, fields: dict[str, dict[str, Any]],
                 taken: set[str]) -> tuple[str, dict[str, Any]]:
        numbers = [n for n, s in fields.items() if s.get("type") in ("integer", "money")]
        money = [n for n, s in fields.items() if s.get("type") == "money"]
        choice = self.rng.randrange(3)
        if choice == 0 and numbers:
            expression = f"if({numbers[0]} >= 50, 'high', 'low')"
            name, returns, en, zh = "band", "string", "Band", "分級"
        elif choice == 1 and len(money) >= 2:
            expression = f"round({money[0]} - coalesce({money[1]}, 0), 2)"
            name, returns, en, zh = "net_value", "decimal", "Net value", "淨值"
        else:
            expression = "concat(upper(name), ' #', len(name))"
            name, returns, en, zh = "display_key", "string", "Display key", "顯示鍵"
        return _unique(name, taken), {"type": "formula", "expression": expression,
                                      "returns": returns, "label": text(en, zh)}

    # -- files ------------------------------------------------------------------------------

    def write(self) -> None:
        self.build()
        modules_dir = self.root / "metadata" / "modules"
        for module, en, zh, owner, depends in MODULES:
            folder = modules_dir / module
            manifest: dict[str, Any] = {"module": module, "version": "1.0.0",
                                        "label": text(en, zh), "owner": owner}
            if depends:
                manifest["depends"] = depends
            self._write(folder / "module.yaml", "\n".join(
                f"{k}: {flow(v)}" for k, v in manifest.items()) + "\n")
            for noun, entity in self.model[module].items():
                self._write(folder / "entities" / f"{noun}.yaml", self._entity_yaml(entity))
            featured = self.rng.sample(list(self.model[module]), 6)
            for noun in featured[:3]:
                self._write(folder / "forms" / f"{noun}_default.yaml",
                            self._form_yaml(f"{noun}_default", self.model[module][noun], noun))
            for noun in featured[3:]:
                self._write(folder / "views" / f"{noun}_all.yaml",
                            self._view_yaml(f"{noun}_all", noun, self.model[module][noun], True))
        self._write_tenant()

    def _write(self, path: Path, body: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, "utf-8")
        self.files.append(path)

    def _entity_yaml(self, entity: dict[str, Any]) -> str:
        lines = ["# yaml-language-server: $schema=../../../../schemas-out/entity.schema.json"]
        for key, value in entity["spec"].items():
            if key == "indexes":
                lines.append("indexes:")
                lines.extend(f"  - {flow(ix)}" for ix in value)
            else:
                lines.append(f"{key}: {flow(value)}")
        lines.append("fields:")
        for name, spec in entity["fields"].items():
            lines.extend(_field_lines(name, spec, "  "))
        return "\n".join(lines) + "\n"

    def _form_yaml(self, form: str, entity: dict[str, Any], noun: str) -> str:
        fields = entity["fields"]
        names = (["number"] if "naming" in entity["spec"] else []) + list(fields)
        enums = [n for n, s in fields.items() if s["type"] == "enum"]
        cut1, cut2 = len(names) // 3, 2 * len(names) // 3
        sections = [("main", "Main", "基本資料", names[:cut1]),
                    ("details", "Details", "詳細資料", names[cut1:cut2]),
                    ("more", "More", "其他", names[cut2:])]
        lines = [f"form: {form}", f"entity: {noun}", "default: true",
                 f"label: {flow(entity['spec']['label'])}", "sections:"]
        for index, (name, en, zh, items) in enumerate(sections):
            lines += [f"  - name: {name}", f"    label: {flow(text(en, zh))}", "    columns: 2"]
            if index == 2:
                condition = {"field": enums[0], "op": "ne", "value": fields[enums[0]]["default"]}
                lines.append("    collapsed: true")
                lines.append(f"    visible_when: {flow(condition)}")
            rendered = [flow({"field": n, "span": 2}) if i == 0 and index == 1 else n
                        for i, n in enumerate(items)]
            lines.append(f"    fields: [{', '.join(rendered)}]")
        return "\n".join(lines) + "\n"

    def _view_yaml(self, view: str, entity_ref: str, entity: dict[str, Any], default: bool,
                   extra_columns: list[str] = ()) -> str:
        fields = entity["fields"]
        by_type: dict[str, list[str]] = {}
        for name, spec in fields.items():
            by_type.setdefault(spec["type"], []).append(name)
        columns = ["number"] if "naming" in entity["spec"] else []
        columns += ["name", by_type["enum"][0], by_type["money"][0], by_type["date"][0]]
        columns.append(f"{by_type['reference'][0]}.name")
        columns += list(extra_columns)
        enum, money = by_type["enum"][0], by_type["money"][0]
        option_values = [o["value"] for o in fields[enum]["options"]]
        condition = {"all": [{"field": enum, "op": "in", "value": option_values[:2]},
                             {"any": [{"field": money, "op": "gte", "value": 1000},
                                      {"field": by_type["date"][0], "op": "older_than",
                                       "value": "30d"}]}]}
        lines = [f"view: {view}", f"entity: {entity_ref}"]
        if default:
            lines.append("default: true")
        lines += [f"label: {flow(entity['spec']['plural_label'])}",
                  f"columns: {flow(columns)}",
                  f"sort: {flow(['-created_at', 'name'])}",
                  f"quick_filters: {flow(by_type['enum'][:2])}",
                  f"search: {flow(entity['spec']['search'])}", "filter:"]
        lines.append(f"  all:\n    - {flow(condition['all'][0])}\n    - any:")
        lines.extend(f"        - {flow(c)}" for c in condition["all"][1]["any"])
        lines.append("page_size: 50")
        return "\n".join(lines) + "\n"

    # -- tenant and overlays ----------------------------------------------------------------

    def _write_tenant(self) -> None:
        folder = self.root / "tenants" / TENANT
        tenant = [
            "# yaml-language-server: $schema=../../schemas-out/tenant.schema.json",
            f"tenant: {TENANT}", f"label: {flow(text('Bench Group', '基準集團'))}",
            "locale: zh-Hant", "locales: [zh-Hant, en]", "timezone: Asia/Taipei",
            "team: bench-crm-admins",
            f"modules: {flow([m[0] for m in MODULES])}",
            "overlays: [overlays/tenant]",
            "business_units:",
            "  retail:",
            f"    label: {flow(text('Retail', '零售事業部'))}",
            "    team: retail-ops",
            "    overlays: [overlays/retail]",
        ]
        self._write(folder / "tenant.yaml", "\n".join(tenant) + "\n")
        keys = [(m, e) for m in self.model for e in self.model[m]]
        tenant_targets = self.rng.sample(keys, 29)
        # the unit shapes half of the tenant's entities again and 14 others
        rest = [k for k in keys if k not in tenant_targets]
        unit_targets = tenant_targets[::2] + self.rng.sample(rest, 14)
        added = self._overlay_folder(folder / "overlays" / "tenant", tenant_targets,
                                     TENANT_ADDED, "tenant")
        self._overlay_folder(folder / "overlays" / "retail", unit_targets, UNIT_ADDED, "retail",
                             shown=added)

    def _overlay_folder(self, folder: Path, targets: list[tuple[str, str]],
                        pool: list[tuple[str, str, str, str]], tag: str,
                        shown: dict[tuple[str, str], str] | None = None
                        ) -> dict[tuple[str, str], str]:
        rng = self.rng
        added: dict[tuple[str, str], str] = {}
        for module, noun in targets:
            entity = self.model[module][noun]
            fields = entity["fields"]
            lines = [f"extend: {module}.{noun}"]
            if rng.random() < 0.3:
                relabel = {"zh-Hant": entity["spec"]["label"]["zh-Hant"] + "資料"}
                lines.append(f"label: {flow(relabel)}")
            lines.append("fields:")
            for new_name, new_type, en, zh in rng.sample(pool, rng.randint(1, 3)):
                spec = self._new_field(new_type, text(en, zh))
                if rng.random() < 0.4:
                    spec["insert_after"] = "name"
                lines.extend(_field_lines(new_name, spec, "  "))
                added.setdefault((module, noun), new_name)
            enums = [n for n, s in fields.items() if s["type"] == "enum"]
            others = [n for n, s in fields.items()
                      if s["type"] in ("string", "date", "integer") and n != "name"]
            for name in rng.sample(enums, 2):
                values = [o["value"] for o in fields[name]["options"]]
                patch: dict[str, Any] = {"relabel": {values[0]: {"zh-Hant": f"{tag}·{values[0]}"}}}
                if rng.random() < 0.5:
                    patch["add"] = [{"value": f"{tag}_special",
                                     "label": text(f"{tag.title()} special", "特別")}]
                change: dict[str, Any] = {"options": patch}
                if rng.random() < 0.3:
                    change["default"] = values[-1]
                lines.append(f"  {name}: {flow(change)}")
            for name in rng.sample(others, 3):
                choice = rng.randrange(3)
                if choice == 0:
                    change = {"help": {"en": f"Filled in by the {tag} team.",
                                       "zh-Hant": f"由{tag}團隊填寫"}}
                elif choice == 1:
                    change = {"label": {"zh-Hant": f"{fields[name]['label']['zh-Hant']} ({tag})"}}
                else:
                    change = {"hidden": True}
                lines.append(f"  {name}: {flow(change)}")
            self._write(folder / f"{module}_{noun}.yaml", "\n".join(lines) + "\n")
        module, noun = targets[0]
        extra = [added[(module, noun)]]
        if shown and (module, noun) in shown:
            extra.append(shown[(module, noun)])
        self._write(folder / "views.yaml", self._view_yaml(
            f"{tag}_{noun}_list", f"{module}.{noun}", self.model[module][noun], False, extra))
        return added

    def _new_field(self, kind: str, label: dict[str, str]) -> dict[str, Any]:
        if kind == "string":
            spec: dict[str, Any] = {"type": "string", "max_length": 64}
        elif kind == "enum":
            spec = {"type": "enum", "default": "a",
                    "options": [{"value": v, "label": text(v.upper(), z)}
                                for v, z in (("a", "甲"), ("b", "乙"), ("c", "丙"), ("d", "丁"))]}
        elif kind == "integer":
            spec = {"type": "integer", "min": 0, "max": 1000}
        elif kind == "money":
            spec = {"type": "money", "currency": "TWD", "min": 0, "default": 0}
        elif kind == "email":
            spec = {"type": "email", "max_length": 254}
        elif kind == "date":
            spec = {"type": "date"}
        else:
            spec = {"type": "boolean", "default": False}
        spec["label"] = label
        return spec


def _field_lines(name: str, spec: dict[str, Any], indent: str) -> list[str]:
    """A field as the shipped modules write it: one flow line, or a block for options/formula."""
    if spec["type"] not in ("enum", "formula"):
        return [f"{indent}{name}: {flow(spec)}"]
    lines = [f"{indent}{name}:"]
    for key, value in spec.items():
        if key == "options":
            lines.append(f"{indent}  options:")
            lines.extend(f"{indent}    - {flow(o)}" for o in value)
        else:
            lines.append(f"{indent}  {key}: {flow(value)}")
    return lines


# -- measurements ---------------------------------------------------------------------------

def compile_cold(root: Path):
    return Compiler(Library.at(root)).compile_tenant(TENANT)


def clear_process_caches() -> list[str]:
    """Empty metacrm's process-wide caches (functools caches at module level).

    A brand-new Compiler has no caches of its own, but a module-level cache (say, of
    generated schema validators) would make every Compiler after the first one warm.
    Clearing them keeps cold_s the cost of a compile in a fresh process, minus imports.
    """
    cleared = []
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "metacrm" or name.startswith("metacrm.")):
            continue
        for attr, value in list(vars(module).items()):
            if getattr(value, "__module__", None) == name and callable(
                    getattr(value, "cache_clear", None)):
                value.cache_clear()
                cleared.append(f"{name}.{attr}")
    return cleared


def parse_all(paths: list[Path]) -> int:
    """The baseline: read and parse every file with PyYAML's C loader."""
    count = 0
    for path in paths:
        data = yaml.load(path.read_bytes().decode("utf-8"), Loader=yaml.CSafeLoader)
        count += data is not None
    return count


def report_failure(result) -> None:
    print(f"compilation of tenant {TENANT!r} FAILED with {len(result.diagnostics)} "
          "diagnostic(s):", file=sys.stderr)
    for diagnostic in result.diagnostics[:60]:
        print("  " + diagnostic.format().replace("\n", "\n  "), file=sys.stderr)
    if len(result.diagnostics) > 60:
        print(f"  ... and {len(result.diagnostics) - 60} more", file=sys.stderr)


def instrument(timer: PassTimer) -> None:
    """Wrap the compiler's passes (not its per-node helpers) with timers."""
    from metacrm.metadata.library import Library as Lib

    def w(owner: Any, attr: str, name: str) -> None:
        if not timer.wrap_if_present(owner, attr, name):
            print(f"(not timed: {getattr(owner, '__name__', owner)}.{attr} is gone)")

    w(Compiler, "__init__", "compiler init (plugins, field types)")
    w(validate.SchemaValidator, "__init__", "schema compile (fastjsonschema + jsonschema)")
    w(compiler.Compiler, "_fingerprint", "fingerprint (walk + hash per file)")
    w(sources.DocumentStore, "load", "store.load (stat, read, sha256)")
    w(Lib, "display", "Library.display (path.resolve)")
    w(sources, "load_bytes", "value builder (_Builder) + decode + sha256")
    w(loader, "_compose", "YAML compose (libyaml CParser)")
    w(validate.SchemaValidator, "detect", "kind detection")
    w(validate.SchemaValidator, "validate", "schema validation (dispatch)")
    w(validate._Pair, "passes", "schema validation fast path (fastjsonschema)")
    w(sources.DocumentStore, "_parse", "store._parse (rest)")
    w(compiler, "definition_files", "file discovery (rglob)")
    w(resolve, "definition_files", "file discovery (rglob)")
    w(Lib, "module_dirs", "file discovery (rglob)")
    w(compiler, "load_modules", "load_modules (rest)")
    w(compiler, "overlay_files", "overlay_files (rest)")
    w(compiler, "base_scope", "resolve: module base scope")
    w(compiler, "apply_overlays", "resolve: tenant + unit overlays")
    w(compiler, "content_hash", "content hash (json.dumps + sha256)")
    w(compiler.Compiler, "_build", "IR build: Registry/Scope assembly")
    w(build.Builder, "entity", "IR build: entities + fields")
    w(build.Builder, "_check_spec", "field spec checks (formula parse, defaults)")
    w(build.Builder, "form", "IR build: forms")
    w(build.Builder, "view", "IR build: views")
    w(compiler, "merge_storage", "merge_storage (union of units)")
    w(compiler, "relations_of", "relations_of")
    builtin = getattr(checks, "BUILTIN_CHECKS", None)
    if builtin is not None:  # register_checks() reads this tuple when a Compiler starts
        timer.replace(checks, "BUILTIN_CHECKS", tuple(
            timer.timed(c, f"checks: {c.__name__}", consume=True) for c in builtin))
    w(compiler.Compiler, "compile_tenant", "other (driver, tenant config, module order)")


def pass_breakdown(root: Path, runs: int) -> list[tuple[str, float, int]]:
    """Median exclusive CPU time per pass over `runs` instrumented cold compiles.

    The cyclic GC is paused during these runs: left on, each collection would be charged
    to whichever pass happened to allocate. :func:`gc_share` measures the GC on its own.
    """
    timer = PassTimer(clock=time.process_time)
    instrument(timer)
    samples: dict[str, list[float]] = {}
    calls: dict[str, int] = {}
    try:
        for _ in range(runs):
            timer.reset()
            clear_process_caches()
            gc.collect()
            gc.disable()
            try:
                with timer.region("total"):
                    result = compile_cold(root)
            finally:
                gc.enable()
            assert result.ok
            for name, seconds in timer.exclusive.items():
                samples.setdefault(name, []).append(seconds)
            calls = dict(timer.calls)
    finally:
        timer.restore()
    total = median(samples.pop("total")) + sum(median(v) for v in samples.values())
    rows = [(name, median(values), calls[name]) for name, values in samples.items()]
    rows.sort(key=lambda r: -r[1])
    return [*rows, ("(sum of passes, GC paused)", total, 1)]


def gc_share(root: Path, runs: int) -> tuple[float, float, list[int]]:
    """(median CPU seconds of a normal cold compile, median CPU seconds inside the cyclic GC,
    collections per generation)."""
    cpus, in_gc, counts = [], [], [0, 0, 0]
    for _ in range(runs):
        clear_process_caches()
        gc.collect()
        with GcTimer(clock=time.process_time) as collector:
            start = time.process_time()
            result = compile_cold(root)
            cpus.append(time.process_time() - start)
        assert result.ok
        in_gc.append(collector.seconds)
        counts = collector.collections
    return median(cpus), median(in_gc), counts


def profile_cold(root: Path, top: int, out: str | None) -> str:
    profiler = cProfile.Profile()
    clear_process_caches()
    gc.collect()
    profiler.enable()
    result = compile_cold(root)
    profiler.disable()
    assert result.ok
    if out:
        profiler.dump_stats(out)
    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer)
    stats.sort_stats("tottime").print_stats(top)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--kept-runs", type=int, default=3,
                        help="runs of a new Compiler with metacrm's process-wide caches kept")
    parser.add_argument("--warm-runs", type=int, default=30)
    parser.add_argument("--parse-runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--keep", metavar="DIR", help="write the library here and keep it")
    parser.add_argument("--profile", action="store_true",
                        help="also print a per-pass breakdown and a cProfile listing")
    parser.add_argument("--profile-out", metavar="FILE", help="save the cProfile stats here")
    args = parser.parse_args(argv)

    temp = None
    if args.keep:
        root = Path(args.keep).resolve()
        if root.exists():
            shutil.rmtree(root)
    else:
        temp = tempfile.TemporaryDirectory(prefix="metacrm-bench-")
        root = Path(temp.name)
    try:
        return run(root, args)
    finally:
        if temp is not None:
            temp.cleanup()


def run(root: Path, args: argparse.Namespace) -> int:
    writer = LibraryWriter(root, args.seed)
    writer.write()
    paths = sorted(p for p in root.rglob("*.yaml"))
    size = sum(p.stat().st_size for p in paths)
    entity_count = sum(len(m) for m in writer.model.values())
    field_count = sum(len(e["fields"]) for m in writer.model.values() for e in m.values())

    parse_all(paths)  # untimed: warms the OS file cache and PyYAML
    first_s, result = timed(lambda: compile_cold(root))
    if not result.ok:
        report_failure(result)
        print_json_line({"cold_s": None, "warm_s": None, "parse_s": None,
                         "ratio_to_parse": None, "error": "compile failed"})
        return 1
    registry = result.registry
    assert registry is not None
    print(f"library: {len(paths)} files, {size / 1024:.0f} KiB, {len(MODULES)} modules, "
          f"{entity_count} entities, {field_count} fields (+ overlays); "
          f"{len(registry.scopes)} scopes, registry {registry.version}")

    caches = clear_process_caches()
    init = measure(lambda: Compiler(Library.at(root)), args.cold_runs, setup=clear_process_caches)
    cold = measure(lambda: compile_cold(root), args.cold_runs, setup=clear_process_caches)
    kept = measure(lambda: compile_cold(root), args.kept_runs) if caches else None
    warm_compiler = Compiler(Library.at(root))
    assert warm_compiler.compile_tenant(TENANT).ok
    warm = measure(lambda: warm_compiler.compile_tenant(TENANT), args.warm_runs, collect=False)
    parse = measure(lambda: parse_all(paths), args.parse_runs)
    again = warm_compiler.compile_tenant(TENANT)
    assert again.ok and again.registry is not None
    assert again.registry.version == registry.version

    cold_s, warm_s, parse_s = median(cold.wall), median(warm.wall), median(parse.wall)
    ratio = cold_s / parse_s

    if args.profile or args.profile_out:
        print("\nwhere a cold compile spends its time (exclusive CPU time per pass, median of 3 "
              "instrumented runs with the cyclic GC paused; timers add a little overhead):")
        rows = pass_breakdown(root, 3)
        total = rows[-1][1]
        print_table(["pass", "cpu", "share", "calls"],
                    [(n, fmt_seconds(s), f"{100 * s / total:.1f}%", c) for n, s, c in rows])
        cpu, in_gc, counts = gc_share(root, 3)
        print(f"\nwith the GC running, as the compiler does today: a cold compile takes "
              f"{fmt_seconds(cpu)} CPU, of which {fmt_seconds(in_gc)} ({100 * in_gc / cpu:.0f}%) "
              f"inside the cyclic GC; collections per generation {counts}")
        print("\ncProfile of one cold compile (profiler overhead inflates Python-heavy code):")
        print(profile_cold(root, 30, args.profile_out))

    def status(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    def row(label: str, runs: Any, target: str = "", verdict: str = "") -> tuple[Any, ...]:
        return (label, fmt_seconds(median(runs.wall)), spread(runs.wall),
                fmt_seconds(median(runs.cpu)), len(runs), target, verdict)

    print()
    print(f"machine: {machine()}")
    if caches:
        print(f"process-wide caches cleared before each cold run: {', '.join(caches)}")
    print_table(
        ["figure", "median", "min .. max", "cpu median", "runs", "target", "status"],
        [row("cold_s: new Compiler + compile_tenant", cold, f"<= {TARGET_COLD_S:g} s",
             status(cold_s <= TARGET_COLD_S)),
         row("  of which Compiler() construction", init),
         *([row("  info: new Compiler, process caches kept", kept)] if kept else []),
         row("warm_s: compile_tenant again, unchanged", warm, f"<= {TARGET_WARM_S * 1e3:g} ms",
             status(warm_s <= TARGET_WARM_S)),
         row("parse_s: yaml CSafeLoader, every file", parse, "baseline"),
         ("ratio_to_parse: cold_s / parse_s", f"{ratio:.2f}x", "",
          f"{median(cold.cpu) / median(parse.cpu):.2f}x", "", f"<= {TARGET_RATIO:g}x",
          status(ratio <= TARGET_RATIO)),
         ("first compile in this process (info)", fmt_seconds(first_s), "", "", 1, "", "")])
    print_json_line({"cold_s": cold_s, "warm_s": warm_s, "parse_s": parse_s,
                     "ratio_to_parse": ratio})
    return 0


if __name__ == "__main__":
    sys.exit(main())
