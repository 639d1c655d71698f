# ruff: noqa: RUF001 - Chinese text uses full-width punctuation
"""The import page of every entity: upload a CSV, check it (dry run) or import it.

    /admin/<module>/<entity>/import   GET the form; POST (multipart, CSRF) runs the import

The upload goes through the same importer as `metacrm import` (metacrm.platform.importer),
as the signed-in user: their `import` right, scopes and field access apply. The page shows
the counts and the first rejected rows, with the whole error report as a CSV download
(embedded in the page, so nothing is kept on the server). Large files belong to the CLI:
the request runs the import before it answers.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from flask import g, request, url_for
from flask_admin import expose

from ..metadata.ir import Text
from ..platform.importer import DEFAULT_BATCH, Importer, ImportFailed
from ..platform.records import RecordError
from .base import VISITOR
from .pages import RecordPages

TEMPLATE = "metacrm_admin/import.html"
REPORT_INLINE_LIMIT = 5 * 1024 * 1024  # bytes of error report embedded as a download
SHOWN_ERRORS = 50

WORDS: dict[str, Text] = {
    "import_csv": Text.of({"en": "Import CSV", "zh-Hant": "匯入 CSV", "zh-Hans": "导入 CSV"}),
    "import_title": Text.of({"en": "Import {entity}", "zh-Hant": "匯入{entity}",
                             "zh-Hans": "导入{entity}"}),
    "import_intro": Text.of({
        "en": "A CSV file in UTF-8 whose first row names the columns: field names or labels "
              "({fields}). Empty cells keep the default. Rows that fail are listed; the "
              "others are imported.",
        "zh-Hant": "UTF-8 編碼的 CSV 檔，第一列為欄位名稱或標籤（{fields}）。"
                   "空白儲存格使用預設值。有問題的列會列出，其餘照常匯入。",
        "zh-Hans": "UTF-8 编码的 CSV 文件，第一行为字段名称或标签（{fields}）。"
                   "空白单元格使用默认值。有问题的行会列出，其余照常导入。"}),
    "file": Text.of({"en": "File", "zh-Hant": "檔案", "zh-Hans": "文件"}),
    "dry_run": Text.of({"en": "Dry run: check every row, write nothing",
                        "zh-Hant": "試跑：只檢查，不寫入", "zh-Hans": "试运行：只检查，不写入"}),
    "key": Text.of({"en": "Update records matching", "zh-Hant": "依此欄位更新既有資料",
                    "zh-Hans": "按此字段更新已有数据"}),
    "no_key": Text.of({"en": "(none: create every row)", "zh-Hant": "（無：全部新增）",
                       "zh-Hans": "（无：全部新增）"}),
    "run": Text.of({"en": "Import", "zh-Hant": "匯入", "zh-Hans": "导入"}),
    "check": Text.of({"en": "Check", "zh-Hant": "檢查", "zh-Hans": "检查"}),
    "no_file": Text.of({"en": "Choose a CSV file first.", "zh-Hant": "請先選擇 CSV 檔。",
                        "zh-Hans": "请先选择 CSV 文件。"}),
    "not_utf8": Text.of({"en": "The file is not UTF-8 text.", "zh-Hant": "檔案不是 UTF-8 文字。",
                         "zh-Hans": "文件不是 UTF-8 文本。"}),
    "result_dry": Text.of({
        "en": "Dry run of {rows} rows: {created} would be created, {updated} updated, "
              "{rejected} rejected.",
        "zh-Hant": "試跑 {rows} 列：將新增 {created}、更新 {updated}、拒絕 {rejected}。",
        "zh-Hans": "试运行 {rows} 行：将新增 {created}、更新 {updated}、拒绝 {rejected}。"}),
    "result": Text.of({
        "en": "Imported {rows} rows: {created} created, {updated} updated, {rejected} "
              "rejected.",
        "zh-Hant": "已匯入 {rows} 列：新增 {created}、更新 {updated}、拒絕 {rejected}。",
        "zh-Hans": "已导入 {rows} 行：新增 {created}、更新 {updated}、拒绝 {rejected}。"}),
    "pairs": Text.of({"en": "{count} possible duplicate pairs were queued for review.",
                      "zh-Hant": "{count} 組疑似重複資料已送審。",
                      "zh-Hans": "{count} 组疑似重复数据已送审。"}),
    "skipped": Text.of({"en": "Columns not imported: {columns}",
                        "zh-Hant": "未匯入的欄位：{columns}",
                        "zh-Hans": "未导入的字段：{columns}"}),
    "errors": Text.of({"en": "Rejected rows", "zh-Hant": "被拒絕的列", "zh-Hans": "被拒绝的行"}),
    "download_report": Text.of({"en": "Download the error report ({count} lines)",
                                "zh-Hant": "下載錯誤報告（{count} 行）",
                                "zh-Hans": "下载错误报告（{count} 行）"}),
    "report_too_big": Text.of({"en": "The error report is too large to download here; run "
                                     "the import with `metacrm import` for the full report.",
                               "zh-Hant": "錯誤報告過大，請改用 `metacrm import` 取得完整報告。",
                               "zh-Hans": "错误报告过大，请改用 `metacrm import` 获取完整报告。"}),
    "row": Text.of({"en": "Row", "zh-Hant": "列", "zh-Hans": "行"}),
    "field": Text.of({"en": "Field", "zh-Hant": "欄位", "zh-Hans": "字段"}),
    "message": Text.of({"en": "Problem", "zh-Hant": "問題", "zh-Hans": "问题"}),
    "value": Text.of({"en": "Value", "zh-Hant": "值", "zh-Hans": "值"}),
    "back": Text.of({"en": "Back to the list", "zh-Hant": "回到列表", "zh-Hans": "返回列表"}),
}


def words(locale: str):
    def word(name: str, **values: Any) -> str:
        text = WORDS[name].get(locale)
        return text.format(**values) if values else text

    return word


class ImportView(RecordPages):
    """The import page of every entity (its own flask-admin view, endpoint `importing`)."""

    def __init__(self, ui: Any) -> None:
        self._default_view = "import_view"
        super().__init__(ui, name="Import", endpoint="importing", url="/admin")

    def is_visible(self) -> bool:
        return False  # reached from each list page, not the menu

    @expose("/<module>/<entity>/import", methods=("GET", "POST"))
    def import_view(self, module: str, entity: str) -> Any:
        key = self.entity_key(module, entity)
        visitor = self.visitor
        service, t = visitor.service, visitor.t
        service.require(key, "import")
        access = service.access(key)
        w = words(t.locale)
        keys = ["id"] + [f.name for f in access.entity.fields
                         if f.unique and f.name in access.schemas.writable]
        form = {"dry_run": True, "key": ""}
        result, error, report_url, report_lines = None, None, None, 0
        status = 200
        if request.method == "POST":
            form = {"dry_run": request.form.get("dry_run") == "on",
                    "key": request.form.get("key") or ""}
            upload = request.files.get("file")
            if upload is None or not upload.filename:
                error, status = w("no_file"), 422
            else:
                key_field = form["key"] if form["key"] in keys else None
                report = io.StringIO()
                try:
                    text = io.TextIOWrapper(upload.stream, encoding="utf-8-sig", newline="")
                    importer = Importer(service, key, dry_run=form["dry_run"], key=key_field,
                                        batch_size=DEFAULT_BATCH, report=report,
                                        source=upload.filename)
                    result = importer.run(text)
                except UnicodeDecodeError:
                    error, status = w("not_utf8"), 422
                except (ImportFailed, RecordError) as exc:
                    error, status = exc.detail, exc.status if exc.status < 500 else 422
                if result is not None and result.errors:
                    data = report.getvalue().encode("utf-8")
                    report_lines = result.errors
                    if len(data) <= REPORT_INLINE_LIMIT:
                        report_url = "data:text/csv;charset=utf-8;base64," + \
                            base64.b64encode(data).decode("ascii")
        fields = ", ".join(f.name for f in access.entity.fields
                           if f.name in access.schemas.writable)
        label = t.text(access.entity.label, access.entity.name)
        return self.page(
            TEMPLATE, status, key=key, w=w, form=form, keys=keys, result=result, error=error,
            report_url=report_url, report_lines=report_lines, shown_errors=SHOWN_ERRORS,
            entity_label=label, title=w("import_title", entity=label),
            intro=w("import_intro", fields=fields), list_url=self.list_url(key),
            action=url_for("importing.import_view", module=module, entity=entity))


def import_url(key: str) -> str | None:
    """The import page of `key` when the signed-in visitor may import (list pages link it)."""
    visitor = g.get(VISITOR)
    if visitor is None:
        return None
    guard = visitor.service.guard
    if guard is not None and not guard.can(key, "import"):
        return None
    module, name = key.split(".", 1)
    return url_for("importing.import_view", module=module, entity=name)


def import_label(locale: str) -> str:
    return WORDS["import_csv"].get(locale)


def install_import_page(admin: Any, app: Any, ui: Any) -> None:
    """Add the import view to a version's admin and the list pages' link helpers."""
    admin.add_view(ImportView(ui))
    app.add_template_global(import_url, "metacrm_import_url")
    app.add_template_global(import_label, "metacrm_import_label")
