# ruff: noqa: RUF001 - Chinese text uses full-width punctuation
"""The automation run log for administrators (read only): `/admin/_automation/`.

Parked runs first (they wait for someone), then any status by a tab; each row names the
rule, the record (a link to its page), the trigger, the attempts and the last error.
Retrying is the API's (`POST /api/v1/_automation/runs/<id>/retry`, see docs/rules.md).
"""

from __future__ import annotations

from typing import Any

from flask import request, url_for
from flask_admin import expose

from ..engines.rules import STATUSES
from ..engines.rules.admin import list_runs
from ..metadata.ir import Text
from ..platform.records import Forbidden
from .base import AdminUI, SecureView

TEMPLATE = "metacrm_admin/automation.html"
PAGE = 100

WORDS: dict[str, Text] = {
    "menu": Text.of({"en": "Automation", "zh-Hant": "自動化", "zh-Hans": "自动化"}),
    "title": Text.of({"en": "Automation runs", "zh-Hant": "自動化執行紀錄",
                      "zh-Hans": "自动化执行记录"}),
    "intro": Text.of({
        "en": "Every run of an automation rule. Parked runs failed for good and wait for "
              "an administrator: retry one with POST /api/v1/_automation/runs/<id>/retry.",
        "zh-Hant": "每一次自動化規則的執行。已擱置的執行無法完成，等待管理員處理："
                   "以 POST /api/v1/_automation/runs/<id>/retry 重試。",
        "zh-Hans": "每一次自动化规则的执行。已搁置的执行无法完成，等待管理员处理："
                   "以 POST /api/v1/_automation/runs/<id>/retry 重试。"}),
    "rule": Text.of({"en": "Rule", "zh-Hant": "規則", "zh-Hans": "规则"}),
    "record": Text.of({"en": "Record", "zh-Hant": "資料", "zh-Hans": "数据"}),
    "trigger": Text.of({"en": "Trigger", "zh-Hant": "觸發", "zh-Hans": "触发"}),
    "attempts": Text.of({"en": "Attempts", "zh-Hant": "嘗試次數", "zh-Hans": "尝试次数"}),
    "created": Text.of({"en": "Created", "zh-Hant": "建立時間", "zh-Hans": "创建时间"}),
    "finished": Text.of({"en": "Finished", "zh-Hant": "完成時間", "zh-Hans": "完成时间"}),
    "error": Text.of({"en": "Last error", "zh-Hant": "最後錯誤", "zh-Hans": "最后错误"}),
    "none": Text.of({"en": "No runs.", "zh-Hant": "沒有執行紀錄。", "zh-Hans": "没有执行记录。"}),
    "older": Text.of({"en": "Older runs", "zh-Hant": "較早的紀錄", "zh-Hans": "较早的记录"}),
    "all": Text.of({"en": "all", "zh-Hant": "全部", "zh-Hans": "全部"}),
}


class AutomationView(SecureView):
    """`/admin/_automation/`: the run log (administrators only)."""

    def __init__(self, ui: AdminUI) -> None:
        super().__init__(ui, name="Automation", endpoint="automation",
                         url="/admin/_automation")

    def is_visible(self) -> bool:
        return False  # the menus are built per visitor (base.build_menus)

    def _handle_view(self, name: str, **kwargs: Any) -> Any:
        response = super()._handle_view(name, **kwargs)
        if response is None and not self.visitor.is_admin:
            raise Forbidden("only administrators see the automation runs")
        return response

    @expose("/")
    def index(self) -> Any:
        t = self.visitor.t
        status = request.args.get("status", "parked")
        if status not in STATUSES:
            status = ""
        before = request.args.get("before", "")
        page = list_runs(self.ui.runtime, status=status or None, limit=PAGE,
                         before=int(before) if before.isascii() and before.isdigit()
                         and len(before) < 19 else None)
        entities = self.ui.registry.entities
        for run in page["items"]:
            key = run["entity"]
            run["record_url"] = url_for("records.details_view", module=key.split(".")[0],
                                        entity=key.split(".", 1)[1],
                                        record_id=run["record_id"]) if key in entities \
                else None
        words = {k: t.text(v, k) for k, v in WORDS.items()}
        tabs = [(s, s, url_for("automation.index", status=s)) for s in STATUSES]
        tabs.append(("", words["all"], url_for("automation.index", status="all")))
        older = url_for("automation.index", status=status or "all", before=page["next"]) \
            if page["next"] else None
        return self.render(TEMPLATE, runs=page["items"], status=status, tabs=tabs,
                           words=words, older=older)
