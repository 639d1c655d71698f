"""Every hook, tested through real plugins: classes with @hookimpl methods, a module loaded
from an entry point of a real (temporary) distribution, and the `metacrm` command."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pluggy
import pytest
from click.testing import CliRunner

from metacrm import hookspecs
from metacrm.cli import main
from metacrm.hookspecs import hookimpl
from metacrm.metadata.checks import CheckContext
from metacrm.metadata.compiler import Compiler
from metacrm.metadata.diagnostics import Diagnostic
from metacrm.metadata.fieldtypes import FieldType, FieldTypeRegistry
from metacrm.metadata.kinds import DefinitionKind, KindRegistry
from metacrm.metadata.library import Library
from metacrm.metadata.schemas import build_all
from metacrm.plugins import DEFAULT_PLUGINS, ENTRY_POINT_GROUP, make_plugin_manager

MODULE = {"metadata/modules/crm/module.yaml": "module: crm\nowner: sales-ops\n"}


def compiler_with(library: Library, *plugins: object) -> Compiler:
    return Compiler(library, make_plugin_manager(extra_plugins=plugins, load_entrypoints=False))


def codes(diagnostics: Any) -> list[str]:
    return [d.code for d in diagnostics]


# -- register_field_types -------------------------------------------------------------------

def coerce_rating(value: Any, spec: Mapping[str, Any]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected a whole number of stars, got {value!r}")
    stars = spec.get("stars", 5)
    if not 1 <= value <= stars:
        raise ValueError(f"{value} is not between 1 and {stars}")
    return value


def check_rating(spec: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], str, str | None]]:
    if spec.get("stars") == 1:
        yield ("stars",), "a one-star rating says nothing", "use at least 2 stars"


class RatingPlugin:
    """A `rating` field: an integer from 1 to `stars` (default 5)."""

    @hookimpl
    def register_field_types(self) -> list[FieldType]:
        return [FieldType(
            "rating", "A score from 1 to `stars` (default 5).",
            {"stars": {"type": "integer", "minimum": 1, "maximum": 10}},
            widens_to=frozenset({"integer"}), coerce=coerce_rating, check_spec=check_rating,
            example="{type: rating, stars: 5}", storage="integer")]


def rating_library(write_library, fields: str) -> Library:
    return write_library({**MODULE, "metadata/modules/crm/entities/survey.yaml":
                          "entity: survey\nfields:\n" + textwrap.indent(fields, "  ")})


def test_plugin_field_type_is_accepted_and_compiled(write_library) -> None:
    library = rating_library(write_library, "satisfaction: {type: rating, stars: 5, default: 4}\n")
    result = compiler_with(library, RatingPlugin()).compile_library()
    assert result.ok, [d.format() for d in result.diagnostics]
    field = result.registry.entities["crm.survey"].field("satisfaction")
    assert field.type == "rating"
    assert dict(field.params) == {"stars": 5}
    assert field.default == 4


def test_plugin_field_type_is_in_the_schema(write_library) -> None:
    compiler = compiler_with(write_library(MODULE), RatingPlugin())
    schema = build_all(compiler.kinds, compiler.types)["entity"]
    assert "rating" in schema["$defs"]["field"]["properties"]["type"]["enum"]
    assert schema["$defs"]["field_rating"]["properties"]["stars"]["maximum"] == 10


def test_unknown_option_of_a_plugin_type_is_reported(write_library) -> None:
    library = rating_library(write_library, "satisfaction: {type: rating, stars: 5, colour: red}\n")
    result = compiler_with(library, RatingPlugin()).compile_library()
    assert not result.ok
    [problem] = result.diagnostics
    assert problem.code == "schema.unknown-key"
    assert "`colour` is not an option of field `satisfaction`" in problem.message
    assert (problem.file, problem.line) == ("metadata/modules/crm/entities/survey.yaml", 3)


def test_plugin_option_schema_is_enforced(write_library) -> None:
    library = rating_library(write_library, "satisfaction: {type: rating, stars: 50}\n")
    result = compiler_with(library, RatingPlugin()).compile_library()
    assert codes(result.diagnostics) == ["schema.range"]


def test_plugin_coerce_checks_defaults(write_library) -> None:
    library = rating_library(write_library, "satisfaction: {type: rating, stars: 5, default: 7}\n")
    result = compiler_with(library, RatingPlugin()).compile_library()
    [problem] = result.diagnostics
    assert problem.code == "field.bad-default"
    assert "7 is not between 1 and 5" in problem.message


def test_plugin_check_spec_is_reported_at_the_option(write_library) -> None:
    library = rating_library(write_library, "satisfaction:\n  type: rating\n  stars: 1\n")
    result = compiler_with(library, RatingPlugin()).compile_library()
    [problem] = result.diagnostics
    assert (problem.code, problem.line, problem.hint) == ("field.rating", 5, "use at least 2 stars")


def test_plugin_type_is_unknown_without_the_plugin(write_library) -> None:
    library = rating_library(write_library, "satisfaction: {type: rating}\n")
    result = compiler_with(library).compile_library()
    assert codes(result.diagnostics) == ["schema.not-allowed"]
    assert "`rating` is not allowed for `type`" in result.diagnostics[0].message


class DuplicateRatingPlugin(RatingPlugin):
    """Registers `rating` a second time."""


class StringAgainPlugin:
    @hookimpl
    def register_field_types(self) -> list[FieldType]:
        return [FieldType("string", "A second string type.")]


@pytest.mark.parametrize("plugins", [(RatingPlugin(), DuplicateRatingPlugin()),
                                     (StringAgainPlugin(),)],
                         ids=["plugin-twice", "built-in-name"])
def test_field_type_registered_twice_raises(plugins: tuple[object, ...]) -> None:
    manager = make_plugin_manager(extra_plugins=plugins, load_entrypoints=False)
    with pytest.raises(ValueError, match="registered twice"):
        FieldTypeRegistry.from_plugins(manager)
    with pytest.raises(ValueError, match="registered twice"):
        Compiler(Library.at("."), manager)


# -- register_definition_kinds --------------------------------------------------------------

REPORT_SCHEMA = {
    "title": "metacrm report (reports/*.yaml)",
    "type": "object",
    "required": ["report", "entity"],
    "properties": {
        "report": {"$ref": "#/$defs/identifier"},
        "entity": {"$ref": "#/$defs/entity_ref"},
        "label": {"$ref": "#/$defs/label"},
        "group_by": {"type": "array", "items": {"$ref": "#/$defs/identifier"}},
    },
    "additionalProperties": False,
}


class ReportPlugin:
    """A `report` definition kind, kept in `reports/` folders of a module."""

    @hookimpl
    def register_definition_kinds(self) -> list[DefinitionKind]:
        return [DefinitionKind("report", "report", REPORT_SCHEMA,
                               "A report: an entity grouped and counted.", "reports")]


LEAD = {"metadata/modules/crm/entities/lead.yaml":
        "entity: lead\nfields:\n  status: {type: enum, options: [new, won]}\n"}


def test_plugin_kind_is_recognised_and_validated(write_library) -> None:
    library = write_library({**MODULE, **LEAD, "metadata/modules/crm/reports/by_status.yaml":
                             "report: by_status\nentity: lead\nlabel: {en: Leads by status}\n"
                             "group_by: [status]\n"})
    compiler = compiler_with(library, ReportPlugin())
    result = compiler.compile_library()
    assert result.ok, [d.format() for d in result.diagnostics]
    loaded = compiler.store.load(library.root / "metadata/modules/crm/reports/by_status.yaml")
    assert loaded.kind is not None and loaded.kind.name == "report"
    assert loaded.doc.data["group_by"] == ["status"]


def test_plugin_kind_schema_errors_are_reported(write_library) -> None:
    library = write_library({**MODULE, **LEAD, "metadata/modules/crm/reports/by_status.yaml":
                             "report: by_status\nentity: lead\ngroup_bye: [status]\n"})
    result = compiler_with(library, ReportPlugin()).compile_library()
    [problem] = result.diagnostics
    assert problem.code == "schema.unknown-key"
    assert (problem.file, problem.line, problem.column) == (
        "metadata/modules/crm/reports/by_status.yaml", 3, 1)
    assert problem.hint == "did you mean `group_by`?"


def test_plugin_kind_folder_is_enforced(write_library) -> None:
    library = write_library({**MODULE, **LEAD, "metadata/modules/crm/reports/lead2.yaml":
                             "entity: lead2\nfields:\n  name: {type: string}\n"})
    result = compiler_with(library, ReportPlugin()).compile_library()
    assert codes(result.diagnostics) == ["module.wrong-folder"]
    assert "`reports/` holds report definitions" in result.diagnostics[0].message


def test_plugin_kind_is_unknown_without_the_plugin(write_library) -> None:
    library = write_library({**MODULE, "metadata/modules/crm/misc/by_status.yaml":
                             "report: by_status\ngroup_by: [status]\n"})
    result = compiler_with(library).compile_library()
    assert codes(result.diagnostics) == ["kind.unknown"]


def test_definition_kind_registered_twice_raises() -> None:
    manager = make_plugin_manager(extra_plugins=[ReportPlugin(), type("Again", (ReportPlugin,),
                                                                      {})()],
                                  load_entrypoints=False)
    with pytest.raises(ValueError, match="registered twice"):
        KindRegistry.from_plugins(manager)


# -- register_checks ------------------------------------------------------------------------

class LabelCheckPlugin:
    """A check: every entity needs a label per locale (not a plain string or none)."""

    def __init__(self, severity: str = "error") -> None:
        self.severity = severity
        self.scopes: list[str | None] = []

    @hookimpl
    def register_checks(self) -> list[Any]:
        def check_labels(ctx: CheckContext) -> Iterator[Diagnostic]:
            self.scopes.append(ctx.scope.unit)
            for entity in ctx.scope.entities.values():
                if [locale for locale, _ in entity.label.values] == ["*"]:
                    problem = ctx.error("style.untranslated-label",
                                        f"{entity.key} has no label per locale", entity.source,
                                        "write label: {en: ..., zh-Hant: ...}")
                    yield Diagnostic(problem.code, problem.message, problem.file, problem.line,
                                     problem.column, hint=problem.hint, severity=self.severity)
        return [check_labels]


def test_plugin_check_error_fails_the_compile(write_library) -> None:
    library = write_library({**MODULE, **LEAD})
    result = compiler_with(library, LabelCheckPlugin()).compile_library()
    assert not result.ok
    [problem] = result.diagnostics
    assert problem.code == "style.untranslated-label"
    assert problem.message == "crm.lead has no label per locale"
    assert (problem.file, problem.line, problem.column) == (
        "metadata/modules/crm/entities/lead.yaml", 1, 1)


def test_plugin_check_warning_keeps_the_registry(write_library) -> None:
    library = write_library({**MODULE, **LEAD})
    result = compiler_with(library, LabelCheckPlugin("warning")).compile_library()
    assert result.ok
    assert [(d.code, d.severity) for d in result.diagnostics] == [
        ("style.untranslated-label", "warning")]


TENANT = """\
tenant: {slug}
modules: [crm]
business_units:
  north: {{}}
  south: {{parent: north}}
"""


def test_plugin_check_runs_once_per_scope(write_library) -> None:
    library = write_library({**MODULE, **LEAD, "tenants/aa/tenant.yaml": TENANT.format(slug="aa")})
    plugin = LabelCheckPlugin("warning")
    result = compiler_with(library, plugin).compile_tenant("aa")
    assert result.ok
    assert plugin.scopes == [None, "north", "south"]
    assert codes(result.diagnostics) == ["style.untranslated-label"]  # reported once


def test_plugin_check_warnings_reach_every_tenant(write_library) -> None:
    library = write_library({**MODULE, **LEAD,
                             "tenants/aa/tenant.yaml": TENANT.format(slug="aa"),
                             "tenants/bb/tenant.yaml": TENANT.format(slug="bb")})
    compiler = compiler_with(library, LabelCheckPlugin("warning"))
    first, second = compiler.compile_tenant("aa"), compiler.compile_tenant("bb")
    assert first.registry is second.registry
    assert codes(second.diagnostics) == codes(first.diagnostics) == ["style.untranslated-label"]


# -- record_event -----------------------------------------------------------------------------

class EventLog:
    """Remembers every record event it is told about."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    @hookimpl
    def record_event(self, event: Any) -> None:
        self.events.append(event)


def test_record_event_reaches_plugins(write_library, tmp_path: Path) -> None:
    """Real records written by the record service reach a plugin after commit."""
    from metacrm.platform.records import RecordService
    from metacrm.platform.runtime import Platform
    from metacrm.platform.settings import Settings

    library = write_library({**MODULE, **LEAD, "tenants/aa/tenant.yaml": TENANT.format(slug="aa")})
    log = EventLog()
    manager = make_plugin_manager(extra_plugins=[log], load_entrypoints=False)
    platform = Platform(Settings(library.root, tmp_path / "var"), manager)
    try:
        report = platform.create_tenant("aa")
        assert report.ok, report.format()
        runtime = platform.runtime("aa")
        service = RecordService(runtime, emit=platform.emit)
        created = service.create("crm.lead", {"status": "new"})
        service.update("crm.lead", created["id"], {"status": "won"})
    finally:
        platform.close()
    assert [(e.kind, e.tenant, e.entity, e.record_id) for e in log.events] == [
        ("created", "aa", "crm.lead", created["id"]), ("updated", "aa", "crm.lead", created["id"])]
    assert log.events[1].changes == {"status": ("new", "won")}
    assert log.events[1].changed_fields == {"status"}
    assert log.events[1].version == runtime.version


# -- record_writing and register_system_tables ----------------------------------------------

class WriteJournal:
    """Keeps its own system table of writes, written inside each write's transaction, and
    refuses a lead whose status is `won` without a prior `new` (to show the rollback)."""

    @hookimpl
    def register_system_tables(self, metadata: Any) -> list[Any]:
        import sqlalchemy as sa

        return [sa.Table("_metacrm_test_journal", metadata,
                         sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                         sa.Column("entity", sa.String(100), nullable=False),
                         sa.Column("record_id", sa.Integer, nullable=False),
                         sa.Column("kind", sa.String(16), nullable=False))]

    @hookimpl
    def record_writing(self, event: Any, connection: Any, service: Any) -> None:
        from metacrm.platform.records import Conflict

        journal = service.system.table("_metacrm_test_journal")
        connection.execute(journal.insert().values(entity=event.entity,
                                                   record_id=event.record_id, kind=event.kind))
        if event.kind == "created" and event.record.get("status") == "won":
            raise Conflict("a lead starts as new")


def test_record_writing_runs_inside_the_write_and_can_refuse_it(write_library,
                                                                tmp_path: Path) -> None:
    """The hook writes in the same transaction as the record: a refusal rolls back both,
    and the plugin's own system table exists in the tenant's database."""
    import sqlalchemy as sa

    from metacrm.platform.records import Conflict, RecordService
    from metacrm.platform.runtime import Platform
    from metacrm.platform.settings import Settings
    from metacrm.platform.systables import runtime_system_tables

    library = write_library({**MODULE, **LEAD, "tenants/aa/tenant.yaml": TENANT.format(slug="aa")})
    manager = make_plugin_manager(extra_plugins=[WriteJournal()], load_entrypoints=False)
    platform = Platform(Settings(library.root, tmp_path / "var"), manager)
    try:
        assert platform.create_tenant("aa").ok
        runtime = platform.runtime("aa")
        service = RecordService(runtime, emit=platform.emit)
        created = service.create("crm.lead", {"status": "new"})
        service.update("crm.lead", created["id"], {"status": "won"})
        with pytest.raises(Conflict, match="starts as new"):
            service.create("crm.lead", {"status": "won"})
        journal = runtime_system_tables(runtime).table("_metacrm_test_journal")
        leads = runtime.tables.by_entity["crm.lead"]
        with runtime.connect() as connection:
            rows = connection.execute(sa.select(journal.c.record_id, journal.c.kind)
                                      .order_by(journal.c.id)).all()
            lead_count = connection.execute(sa.select(sa.func.count()).select_from(leads)
                                            ).scalar_one()
    finally:
        platform.close()
    assert [tuple(r) for r in rows] == [(created["id"], "created"), (created["id"], "updated")]
    assert lead_count == 1


# -- install_api_routes and extend_openapi ----------------------------------------------------

class PingRoutes:
    """A route on every tenant's API (authenticated like the rest) and its OpenAPI path."""

    @hookimpl
    def install_api_routes(self, app: Any, api: Any) -> None:
        from metacrm.generators.api import json_response

        def ping() -> Any:
            return json_response({"tenant": api.runtime.slug,
                                  "user": api.principal().user_id})

        app.add_url_rule("/api/v1/_ping", "api_ping", ping, methods=["GET"])

    @hookimpl
    def extend_openapi(self, document: dict, api: Any, service: Any) -> None:
        document["paths"]["/api/v1/_ping"] = {"get": {
            "operationId": "ping", "summary": "Who am I, where",
            "responses": {"200": {"description": "The tenant and the caller"}}}}


def test_install_api_routes_adds_authenticated_routes_with_openapi(write_library,
                                                                   tmp_path: Path) -> None:
    from metacrm.platform.app import create_app
    from metacrm.platform.auth import create_user, issue_token, set_roles
    from metacrm.platform.runtime import Platform
    from metacrm.platform.settings import Settings

    library = write_library({**MODULE, **PEOPLE})
    manager = make_plugin_manager(extra_plugins=[PingRoutes()], load_entrypoints=False)
    settings = Settings(library.root, tmp_path / "var")
    platform = Platform(settings, manager)
    try:
        assert platform.create_tenant("aa").ok
        runtime = platform.runtime("aa")
        with runtime.begin() as connection:
            tester = create_user(connection, "tester")
            set_roles(connection, tester, ["administrator"])
            token = issue_token(connection, tester)
        client = create_app(settings, platform).test_client()
        anonymous = client.get("/t/aa/api/v1/_ping")
        signed = client.get("/t/aa/api/v1/_ping", headers={"Authorization": f"Bearer {token}"})
        document = client.get("/t/aa/api/v1/openapi.json").get_json()
    finally:
        platform.close()
    assert anonymous.status_code == 401
    assert anonymous.content_type == "application/problem+json"
    assert signed.get_json() == {"tenant": "aa", "user": tester}
    assert document["paths"]["/api/v1/_ping"]["get"]["operationId"] == "ping"


# -- register_condition_operators -----------------------------------------------------------

def longer_than_sql(column: Any, value: int, ctx: Any) -> Any:
    import sqlalchemy as sa

    return sa.func.length(column) > value


def longer_than_python(field_value: str, value: int, ctx: Any) -> bool:
    return len(field_value) > value


def whole_number(value: Any, field_type: str, options: tuple[str, ...]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number of characters, got {value!r}")
    return value


class LongerThanPlugin:
    """A condition operator for text: `{field: name, op: longer_than, value: 3}`."""

    @hookimpl
    def register_condition_operators(self) -> list[Any]:
        from metacrm.engines.conditions import Operator

        return [Operator("longer_than", frozenset({"string", "text"}), "scalar",
                         longer_than_sql, longer_than_python, coerce=whole_number,
                         description="The text has more than `value` characters.",
                         example="{field: name, op: longer_than, value: 3}")]


PEOPLE = {"metadata/modules/crm/entities/person.yaml":
          "entity: person\nlabel: {en: Person}\nfields:\n  name: {type: string}\n",
          "tenants/aa/tenant.yaml": "tenant: aa\nmodules: [crm]\n"}


def test_plugin_operator_filters_records_in_sql_and_python(write_library, tmp_path: Path) -> None:
    from metacrm.engines.conditions import EvalContext, evaluate, parse_condition
    from metacrm.platform.app import create_app
    from metacrm.platform.auth import create_user, issue_token, set_roles
    from metacrm.platform.records import RecordService
    from metacrm.platform.runtime import Platform
    from metacrm.platform.settings import Settings

    library = write_library({**MODULE, **PEOPLE})
    manager = make_plugin_manager(extra_plugins=[LongerThanPlugin()], load_entrypoints=False)
    settings = Settings(library.root, tmp_path / "var")
    platform = Platform(settings, manager)
    try:
        assert platform.create_tenant("aa").ok
        runtime = platform.runtime("aa")
        service = RecordService(runtime)
        records = [service.create("crm.person", {"name": name})
                   for name in ("Al", "Alice", "Bartholomew", None)]
        with runtime.begin() as connection:
            tester = create_user(connection, "tester")
            set_roles(connection, tester, ["administrator"])
            token = issue_token(connection, tester)
        client = create_app(settings, platform).test_client()
        condition = {"field": "name", "op": "longer_than", "value": 3}
        response = client.get("/t/aa/api/v1/crm/person", query_string={
            "filter": json.dumps(condition)}, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.get_data(as_text=True)
        from_sql = [item["name"] for item in response.get_json()["items"]]
        bad = client.get("/t/aa/api/v1/crm/person", query_string={
            "filter": json.dumps({**condition, "value": "three"})},
            headers={"Authorization": f"Bearer {token}"})
        node = parse_condition(condition, "crm.person", runtime.registry, platform.operators)
        context = EvalContext(dt.datetime.now(dt.UTC), dt.UTC)
        from_python = [r["name"] for r in records if evaluate(node, r, context)]
    finally:
        platform.close()
    assert sorted(from_sql) == sorted(from_python) == ["Alice", "Bartholomew"]
    assert bad.status_code == 422
    assert "whole number" in bad.get_data(as_text=True)


def test_operator_registered_twice_raises() -> None:
    from metacrm.engines.conditions import OperatorRegistry

    manager = make_plugin_manager(extra_plugins=[LongerThanPlugin(),
                                                 type("Again", (LongerThanPlugin,), {})()],
                                  load_entrypoints=False)
    with pytest.raises(ValueError, match="registered twice"):
        OperatorRegistry.from_plugins(manager)


def test_plugin_operator_is_accepted_in_view_filters(write_library) -> None:
    library = write_library({**MODULE, **PEOPLE, "metadata/modules/crm/views/long_names.yaml":
                             "view: long_names\nentity: person\ncolumns: [name]\n"
                             "filter: {field: name, op: longer_than, value: 3}\n"})
    result = compiler_with(library, LongerThanPlugin()).compile_library()
    assert result.ok, [d.format() for d in result.diagnostics]


# -- the plugin manager ---------------------------------------------------------------------

class MisspeltHookPlugin:
    @hookimpl
    def register_field_type(self) -> list[FieldType]:  # not a hook: the s is missing
        return []


def test_unknown_hook_fails_at_start_up() -> None:
    with pytest.raises(pluggy.PluginValidationError, match="register_field_type"):
        make_plugin_manager(extra_plugins=[MisspeltHookPlugin()], load_entrypoints=False)


class WrongArgumentPlugin:
    @hookimpl
    def record_event(self, record: Any) -> None:  # the hook's argument is `event`
        pass


def test_hook_with_unknown_argument_fails_at_start_up() -> None:
    with pytest.raises(pluggy.PluginValidationError, match=r"Argument\(s\) \{'record'\}"):
        make_plugin_manager(extra_plugins=[WrongArgumentPlugin()], load_entrypoints=False)


def test_built_in_plugins_are_registered_by_name() -> None:
    manager = make_plugin_manager(load_entrypoints=False)
    for name in DEFAULT_PLUGINS:
        assert manager.get_plugin(name) is not None, name


# -- entry points ---------------------------------------------------------------------------

PLUGIN_MODULE = "metacrm_test_report_plugin"
PLUGIN_SOURCE = f'''
"""A plugin installed as a distribution: found through the `{ENTRY_POINT_GROUP}` entry points."""
from metacrm.hookspecs import hookimpl
from metacrm.metadata.kinds import DefinitionKind

SCHEMA = {REPORT_SCHEMA!r}


@hookimpl
def register_definition_kinds():
    return [DefinitionKind("report", "report", SCHEMA, "A report.", "reports")]
'''


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real distribution (a .dist-info folder with entry_points.txt) on sys.path."""
    site = tmp_path / "site-packages"
    site.mkdir()
    (site / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE, "utf-8")
    dist_info = site / "metacrm_test_report_plugin-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: metacrm-test-report-plugin\nVersion: 1.0\n", "utf-8")
    (dist_info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nreports = {PLUGIN_MODULE}\n", "utf-8")
    monkeypatch.syspath_prepend(str(site))
    yield "reports"
    sys.modules.pop(PLUGIN_MODULE, None)


def test_entry_point_plugins_are_loaded(installed_plugin: str) -> None:
    manager = make_plugin_manager()
    plugin = manager.get_plugin(installed_plugin)
    assert plugin is not None and plugin.__name__ == PLUGIN_MODULE
    assert [d.project_name for p, d in manager.list_plugin_distinfo() if p is plugin] == [
        "metacrm-test-report-plugin"]
    assert "report" in [kind.name for kind in KindRegistry.from_plugins(manager)]


def test_entry_points_can_be_skipped(installed_plugin: str) -> None:
    manager = make_plugin_manager(load_entrypoints=False)
    assert manager.get_plugin(installed_plugin) is None


def test_installed_kind_appears_in_schema_command(installed_plugin: str, write_library,
                                                  tmp_path: Path) -> None:
    library = write_library(MODULE)
    out = tmp_path / "schemas-out"
    result = CliRunner().invoke(main, ["--root", str(library.root), "schema", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out / 'report.schema.json'}" in result.output
    schema = json.loads((out / "report.schema.json").read_text("utf-8"))
    assert schema["required"] == ["report", "entity"]
    assert schema["$defs"]["identifier"]["pattern"] == "^[a-z][a-z0-9_]*$"


def test_installed_kind_is_validated_by_the_cli(installed_plugin: str, write_library,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    library = write_library({**MODULE, **LEAD, "metadata/modules/crm/reports/by_status.yaml":
                             "report: by_status\nentity: lead\ngroup_bye: [status]\n"})
    monkeypatch.chdir(library.root)
    result = CliRunner().invoke(main, ["validate", "--format", "json"])
    assert result.exit_code == 1, result.output
    [problem] = json.loads(result.output)["diagnostics"]
    assert problem["code"] == "schema.unknown-key"
    assert problem["file"] == "metadata/modules/crm/reports/by_status.yaml"


# -- every hook is covered --------------------------------------------------------------------

def hook_names() -> set[str]:
    marker = f"{hookspecs.PROJECT}_spec"
    return {name for name, value in vars(hookspecs).items()
            if inspect.isfunction(value) and hasattr(value, marker)}


def hooks_of(plugin: object) -> set[str]:
    marker = f"{hookspecs.PROJECT}_impl"
    return {name for name, value in inspect.getmembers(plugin) if hasattr(value, marker)}


def test_every_hook_is_implemented_or_tested() -> None:
    """Each hook has a built-in implementation or a plugin class in this file uses it."""
    manager = make_plugin_manager(load_entrypoints=False)
    built_in = set().union(*(hooks_of(manager.get_plugin(name)) for name in DEFAULT_PLUGINS))
    here = set().union(*(hooks_of(value) for value in globals().values()
                         if inspect.isclass(value) and value is not MisspeltHookPlugin))
    missing = sorted(hook_names() - built_in - here)
    assert not missing, "hooks with neither a built-in implementation nor a plugin in " \
        f"tests/test_plugins.py: {', '.join(missing)}"


def test_test_plugins_use_real_hooks() -> None:
    """Guard for the test above: the plugin classes here name hooks that exist."""
    here = set().union(*(hooks_of(value) for value in globals().values()
                         if inspect.isclass(value) and value is not MisspeltHookPlugin))
    assert here - hook_names() == set()
