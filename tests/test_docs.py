"""The docs keep up with the code: every field type, schema key, hook and command is documented.

Each test names what is missing, so a new field type, key, hook or CLI command without
documentation fails here with the page and heading to add. Only the built-in plugins count
(``load_entrypoints=False``): third-party plugins installed on a machine document themselves.
"""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from metacrm import hookspecs
from metacrm.cli import main
from metacrm.metadata.compiler import Compiler
from metacrm.metadata.diagnostics import DocPath
from metacrm.metadata.fieldtypes import FieldTypeRegistry
from metacrm.metadata.kinds import KindRegistry
from metacrm.metadata.loader import LoadError, load_bytes
from metacrm.metadata.schemas import build_all
from metacrm.metadata.validate import SchemaValidator
from metacrm.plugins import make_plugin_manager

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
FENCE = re.compile(r"^```([\w-]*)\s*$")


@pytest.fixture(scope="module")
def plugin_manager():
    return make_plugin_manager(load_entrypoints=False)


@pytest.fixture(scope="module")
def field_types(plugin_manager) -> FieldTypeRegistry:
    return FieldTypeRegistry.from_plugins(plugin_manager)


@pytest.fixture(scope="module")
def kinds(plugin_manager) -> KindRegistry:
    return KindRegistry.from_plugins(plugin_manager)


def read(name: str) -> str:
    path = ROOT / name
    assert path.is_file(), f"{name} is missing"
    return path.read_text("utf-8")


def outside_fences(text: str) -> Iterator[str]:
    """The lines of a Markdown text that are not inside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of every Markdown heading outside code blocks."""
    found = []
    for line in outside_fences(text):
        match = HEADING.match(line)
        if match:
            found.append((len(match.group(1)), match.group(2)))
    return found


def sections(text: str) -> dict[str, str]:
    """Each heading's text mapped to its body, up to the next heading of the same or a
    higher level (so a section includes its sub-sections)."""
    lines = text.splitlines()
    starts: list[tuple[int, int, str]] = []
    fenced = False
    for number, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := HEADING.match(line)):
            starts.append((number, len(match.group(1)), match.group(2)))
    body: dict[str, str] = {}
    for index, (number, level, title) in enumerate(starts):
        end = next((n for n, lvl, _ in starts[index + 1:] if lvl <= level), len(lines))
        body[title] = "\n".join(lines[number + 1:end])
    return body


def code_blocks(text: str) -> Iterator[tuple[int, str, str]]:
    """(first line number, info string, body) of every fenced code block."""
    info, start, body = None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if info is None and line.startswith("```"):
            info, start, body = (match.group(1) if match else line[3:].strip()), number + 1, []
        elif info is not None and line.startswith("```"):
            yield start, info, "\n".join(body) + "\n"
            info = None
        elif info is not None:
            body.append(line)


def schema_keys(node: Any, path: DocPath = ()) -> Iterator[tuple[str, str]]:
    """(key, where) for every key of every `properties` mapping, anywhere in a schema."""
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            for key in properties:
                yield key, "/".join(map(str, (*path, "properties", key)))
        for key, value in node.items():
            yield from schema_keys(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from schema_keys(value, (*path, index))


# -- docs/language.md -----------------------------------------------------------------------

def test_every_field_type_has_a_heading(field_types: FieldTypeRegistry) -> None:
    titles = {title for _, title in headings(read("docs/language.md"))}
    missing = [name for name in field_types.names() if f"`{name}`" not in titles]
    assert not missing, "docs/language.md has no heading for field type(s) " + ", ".join(
        f"### `{name}`" for name in missing)


def test_every_schema_key_is_mentioned(kinds: KindRegistry, field_types: FieldTypeRegistry) -> None:
    text = read("docs/language.md")
    missing: dict[str, str] = {}
    for kind_name, schema in build_all(kinds, field_types).items():
        for key, where in schema_keys(schema):
            if f"`{key}`" not in text and key not in missing:
                missing[key] = f"{kind_name}.schema.json#/{where}"
    assert not missing, "docs/language.md never mentions these schema keys as `key`:\n" + \
        "\n".join(f"  `{key}` (first seen at {where})" for key, where in sorted(missing.items()))


def test_every_definition_kind_has_a_section(kinds: KindRegistry) -> None:
    titles = [title for _, title in headings(read("docs/language.md"))]
    missing = [kind.name for kind in kinds
               if not any(f"`{kind.key}:`" in title for title in titles)]
    assert not missing, "docs/language.md has no heading naming the key of kind(s): " + \
        ", ".join(f"{name} (e.g. `### ... — `{kinds[name].key}:``)" for name in missing)


def test_yaml_examples_are_valid(kinds: KindRegistry, field_types: FieldTypeRegistry) -> None:
    """Every ```yaml example loads as YAML 1.2; complete definitions pass their schema, and
    `fields:`-only snippets pass as the fields of an entity (type checks included).

    A block whose first line mentions a plugin is only parsed: it needs types or kinds that
    the built-in plugins do not have."""
    validator = SchemaValidator(kinds, field_types)
    problems = []
    for page in sorted(DOCS.glob("*.md")):
        name = page.relative_to(ROOT)
        for start, info, body in code_blocks(page.read_text("utf-8")):
            if info not in ("yaml", "yml"):
                continue
            raw, shift = body.encode(), 0
            try:
                doc = load_bytes(raw, str(name))
                if isinstance(doc.data, dict) and set(doc.data) == {"fields"}:
                    raw, shift = b"entity: example\n" + raw, 1
                    doc = load_bytes(raw, str(name))
            except LoadError as exc:
                problems.extend(f"{name}:{start + d.line - 1}: {d.message}"
                                for d in exc.diagnostics)
                continue
            kind, found = validator.detect(doc)
            if kind is None or "plugin" in body.splitlines()[0]:
                continue
            found = validator.validate(doc, kind)
            problems.extend(f"{name}:{start + d.line - 1 - shift}: {d.message}" for d in found)
            if not found and kind.name == "entity":
                problems.extend(f"{name}:{start}: {problem}"
                                for problem in _field_problems(doc.data["fields"], field_types))
    assert not problems, "invalid YAML examples in docs:\n" + "\n".join(problems)


def _field_problems(fields: dict[str, Any], registry: FieldTypeRegistry) -> Iterator[str]:
    """Type-level checks of example fields (check_spec, default values)."""
    for name, spec in fields.items():
        field_type = registry[spec["type"]]
        for _, message, _ in (field_type.check_spec(spec) if field_type.check_spec else ()):
            yield f"field `{name}`: {message}"
        if "default" in spec:
            problem = field_type.check_value(spec["default"], spec)
            if problem:
                yield f"field `{name}`: default: {problem}"


# -- docs/hooks.md --------------------------------------------------------------------------

def hook_specs() -> dict[str, Any]:
    marker = f"{hookspecs.PROJECT}_spec"
    return {name: value for name, value in vars(hookspecs).items()
            if inspect.isfunction(value) and hasattr(value, marker)}


def test_hookspecs_are_found() -> None:
    assert hook_specs(), "no hook specifications found in metacrm/hookspecs.py"


def test_every_hook_has_a_section() -> None:
    body = sections(read("docs/hooks.md"))
    missing, incomplete = [], []
    for name, spec in hook_specs().items():
        section = next((text for title, text in body.items() if f"`{name}" in title), None)
        if section is None:
            missing.append(name)
            continue
        for parameter in inspect.signature(spec).parameters:
            if f"`{parameter}`" not in section and f"{parameter}:" not in section:
                incomplete.append(f"{name}({parameter})")
    assert not missing, "docs/hooks.md has no section (heading `### `name``) for hook(s): " + \
        ", ".join(missing)
    assert not incomplete, "docs/hooks.md does not describe hook parameter(s): " + \
        ", ".join(incomplete)


def test_hooks_example_plugin_works(write_library) -> None:
    """The example plugin in docs/hooks.md compiles its own YAML examples."""
    blocks = list(code_blocks(sections(read("docs/hooks.md"))["Example plugin"]))
    source = next(body for _, info, body in blocks if info == "python")
    plugin = types.ModuleType("metacrm_rating")
    exec(compile(source, "docs/hooks.md#example-plugin", "exec"), plugin.__dict__)
    files = {"metadata/modules/crm/module.yaml": "module: crm\nowner: sales-ops\n",
             "metadata/modules/crm/entities/lead.yaml":
             "entity: lead\nlabel: {en: Lead}\nfields:\n  status: {type: enum, options: [new]}\n"}
    for _, info, body in blocks:
        if info == "yaml":
            files[body.split()[1]] = body
    library = write_library(files)
    manager = make_plugin_manager(extra_plugins=[plugin], load_entrypoints=False)
    result = Compiler(library, manager).compile_library()
    assert result.ok, [d.format() for d in result.diagnostics]
    assert [(d.code, d.severity) for d in result.diagnostics] == [
        ("style.untranslated-label", "warning")]
    assert dict(result.registry.entities["crm.survey"].field("satisfaction").params) == {
        "stars": 5}


# -- docs/cli.md ----------------------------------------------------------------------------

def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    """Every command below `group`, with its path of names, sub-groups included."""
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if command is None or command.hidden:
            continue
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from commands(command, (*prefix, name))


def test_cli_commands_are_found() -> None:
    names = {" ".join(path) for path, _ in commands(main)}
    assert {"validate", "show", "schema"} <= names


def test_every_cli_command_is_documented() -> None:
    body = sections(read("docs/cli.md"))
    missing, undocumented = [], []
    for path, command in commands(main):
        title = f"`metacrm {' '.join(path)}`"
        section = next((text for heading, text in body.items() if heading.startswith(title)),
                       None)
        if section is None:
            missing.append(title)
            continue
        for param in command.params:
            if isinstance(param, click.Option):
                names = [o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")]
                if names and not any(f"`{o}" in section for o in names):
                    undocumented.append(f"{title} {names[0]}")
            elif isinstance(param, click.Argument):
                if param.human_readable_name.upper() not in section:
                    undocumented.append(f"{title} {param.human_readable_name.upper()}")
    assert not missing, "docs/cli.md has no heading for command(s): " + ", ".join(
        f"## {title}" for title in missing)
    assert not undocumented, "docs/cli.md does not describe: " + ", ".join(undocumented)


def test_global_cli_options_are_documented() -> None:
    text = read("docs/cli.md")
    missing = [o for param in main.params if isinstance(param, click.Option)
               for o in param.opts if o.startswith("--") and f"`{o}" not in text]
    assert not missing, "docs/cli.md does not describe global option(s): " + ", ".join(missing)


# -- README.md and the index ------------------------------------------------------------------

def test_readme_starts_with_make_run_and_make_test() -> None:
    lines = [line for line in read("README.md").splitlines() if line.strip()]
    assert lines and lines[0].startswith("# "), "README.md must start with a `# title` line"
    assert len(lines) > 2 and not lines[1].startswith(("```", "#")), \
        "README.md needs one line of text right after the title"
    assert lines[2].startswith("```"), \
        "README.md must show a fenced block with `make run` and `make test` right after " \
        "the title and one line"
    block = []
    for line in lines[3:]:
        if line.startswith("```"):
            break
        command = line.split("#", 1)[0].strip()
        if command:
            block.append(command)
    assert block[:2] == ["make run", "make test"], \
        f"README.md's first block must start with `make run` then `make test`; found {block}"


def test_index_links_every_page() -> None:
    index = read("docs/index.md")
    missing = [page.name for page in sorted(DOCS.glob("*.md"))
               if page.name != "index.md" and f"({page.name}" not in index]
    assert not missing, "docs/index.md does not link: " + ", ".join(missing)


# The pages this file keeps complete; other pages (docs/api.md, ...) belong to their areas.
MAINTAINED = ("README.md", "docs/index.md", "docs/language.md", "docs/cli.md", "docs/hooks.md",
              "docs/architecture.md")


@pytest.mark.parametrize("name", MAINTAINED)
def test_relative_links_resolve(name: str) -> None:
    page = ROOT / name
    broken = []
    text = "\n".join(outside_fences(read(name)))
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"broken links in {name}: " + ", ".join(broken)


def _anchors(page: Path) -> set[str]:
    """GitHub-style anchors of a page's headings."""
    anchors: set[str] = set()
    for _, title in headings(page.read_text("utf-8")):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_api_route_is_documented(tmp_path: Path) -> None:
    """Every URL rule of a tenant's generated API appears in docs/api.md (method and path)."""
    import shutil

    from metacrm.platform.app import tenant_app
    from metacrm.platform.runtime import Platform
    from metacrm.platform.settings import Settings

    for folder in ("metadata", "tenants"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    platform = Platform(Settings(tmp_path, tmp_path / "var", None))
    try:
        assert platform.create_tenant("acme").ok
        app = tenant_app(platform, platform.runtime("acme"))
    finally:
        platform.close()
    page = (ROOT / "docs" / "api.md").read_text("utf-8")
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api"):
            continue
        path = rule.rule.replace("<int:record_id>", "<id>")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if f"`{method} {path}`" not in page:
                missing.append(f"{method} {path}")
    assert not missing, "docs/api.md does not list: " + ", ".join(missing)
