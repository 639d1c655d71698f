"""The invalid-definitions corpus: each broken library reports exactly the diagnostics it expects.

Every folder below ``tests/fixtures/invalid/`` is a small project (``metadata/modules/...``
and/or ``tenants/<slug>/...``) with an ``expected.yaml``: a list of
``{code, file, line, message_contains, hint_contains?}``, files relative to the case folder.
A case that needs a file too big to commit says so with the mapping form
``{generate: {file, bytes}, diagnostics: [...]}``; the test writes that file into a copy.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from metacrm.cli import main
from metacrm.metadata.compiler import Compiler, CompileResult
from metacrm.metadata.diagnostics import Diagnostic
from metacrm.metadata.library import Library

WriteLibrary = Callable[[Mapping[str, str]], Library]  # the conftest fixture's type

CORPUS = Path(__file__).resolve().parent / "fixtures" / "invalid"
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())


@dataclass(frozen=True)
class Expected:
    code: str
    file: str
    line: int
    message_contains: str
    hint_contains: str | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return self.code, self.file, self.line


@dataclass(frozen=True)
class Case:
    name: str
    root: Path
    expected: tuple[Expected, ...]


def read_expected(folder: Path) -> tuple[list[Expected], dict[str, Any] | None]:
    data = yaml.safe_load((folder / "expected.yaml").read_text("utf-8"))
    generate = None
    if isinstance(data, dict):
        generate, data = data.get("generate"), data["diagnostics"]
    assert isinstance(data, list) and data, f"{folder.name}: expected.yaml lists no diagnostics"
    return [Expected(**item) for item in data], generate


def write_big_file(target: Path, size: int) -> None:
    """A syntactically fine entity file of at least `size` bytes."""
    lines = ["entity: huge", "fields:"]
    total, index = 0, 0
    while total < size:
        line = f"  field_{index}: {{type: string, max_length: 200, label: {{en: Field {index}}}}}"
        lines.append(line)
        total += len(line) + 1
        index += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n", "utf-8")


def prepare(name: str, tmp_path: Path) -> Case:
    """The case ready to compile: the fixture folder itself, or a copy with generated files."""
    source = CORPUS / name
    expected, generate = read_expected(source)
    root = source
    if generate is not None:
        root = tmp_path / name
        shutil.copytree(source, root)
        write_big_file(root / generate["file"], generate["bytes"])
    return Case(name, root, tuple(expected))


def compile_case(root: Path) -> list[CompileResult]:
    """Every tenant of the case, then the module library on its own."""
    library = Library.at(root)
    compiler = Compiler(library)
    results = [compiler.compile_tenant(slug) for slug in library.tenant_slugs()]
    results.append(compiler.compile_library())
    return results


def gathered(results: list[CompileResult]) -> list[Diagnostic]:
    return list(dict.fromkeys(d for r in results for d in r.diagnostics))


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    return prepare(request.param, tmp_path)


def test_corpus_has_enough_cases() -> None:
    assert len(CASES) >= 45


@pytest.mark.parametrize("name", CASES)
def test_case_folder_is_well_formed(name: str) -> None:
    folder = CORPUS / name
    expected, generate = read_expected(folder)
    assert (folder / "metadata").is_dir() or (folder / "tenants").is_dir()
    generated = generate["file"] if generate else None
    for item in expected:
        assert item.file == generated or (folder / item.file).is_file(), item
        assert item.line >= 1 and item.message_contains, item
    for path in folder.rglob("*"):
        assert path.stat().st_size < 64 * 1024, f"{path}: keep fixtures small; generate big files"


def test_case_reports_exactly_the_expected_diagnostics(case: Case) -> None:
    results = compile_case(case.root)
    found = gathered(results)
    listing = "\n".join(d.format() for d in found)
    assert {(d.code, d.file, d.line) for d in found} == {e.key for e in case.expected}, listing
    for item in case.expected:
        same = [d for d in found if (d.code, d.file, d.line) == item.key]
        assert any(item.message_contains in d.message for d in same), (item, listing)
        if item.hint_contains is not None:
            assert any(item.hint_contains in (d.hint or "") for d in same), (item, listing)
    for diagnostic in found:
        assert diagnostic.severity == "error"
        assert diagnostic.column >= 1, diagnostic
        assert "Traceback" not in diagnostic.message and "Error(" not in diagnostic.message
    # where an error is reported there is no Registry
    failed = [r for r in results if r.diagnostics]
    assert failed, "a broken case must fail to compile somewhere"
    for result in failed:
        assert result.registry is None and not result.ok


def test_cli_validate_exits_1_with_the_messages(case: Case) -> None:
    result = CliRunner().invoke(main, ["--root", str(case.root), "validate"])
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, Exception), result.exception
    assert "Traceback" not in result.output
    for item in case.expected:
        assert f"{item.file}:{item.line}:" in result.output, (item, result.output)
        assert f"error[{item.code}]" in result.output, (item, result.output)
        assert item.message_contains in result.output, (item, result.output)
        if item.hint_contains is not None:
            assert item.hint_contains in result.output, (item, result.output)
    assert "error(s)" in result.output


GOOD_LIBRARY = {
    "metadata/modules/crm/module.yaml": """
        module: crm
        owner: sales-ops
        """,
    "metadata/modules/crm/entities/lead.yaml": """
        entity: lead
        fields:
          company: {type: string, required: true}
          status: {type: enum, options: [new, won], default: new}
        """,
    "tenants/acme/tenant.yaml": """
        tenant: acme
        team: sales-ops
        modules: [crm]
        """,
}


def _rewrite(path: Path, text: str) -> None:
    """Write `text` and move the mtime on, so a stat-based cache cannot miss the change."""
    before = path.stat().st_mtime_ns
    path.write_text(text, "utf-8")
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


def test_broken_file_never_replaces_a_working_registry(write_library: WriteLibrary) -> None:
    library = write_library(GOOD_LIBRARY)
    compiler = Compiler(library)
    good = compiler.compile_tenant("acme")
    assert good.ok, good.diagnostics
    registry = good.registry
    assert registry is not None
    version, fields = registry.version, registry.entity("crm.lead").field_names

    lead = library.root / "metadata/modules/crm/entities/lead.yaml"
    working_text = lead.read_text("utf-8")
    _rewrite(lead, "entity: lead\nfields:\n  company: {type: string, required: true\n")
    broken = compiler.compile_tenant("acme")
    assert broken.registry is None
    assert [d.code for d in broken.diagnostics] == ["yaml.syntax"]
    assert compiler.compile_library().registry is None

    # the earlier result and its Registry are untouched
    assert good.registry is registry
    assert registry.version == version
    assert registry.entity("crm.lead").field_names == fields

    _rewrite(lead, working_text.replace("default: new}", "default: new}\n  city: {type: string}"))
    fixed = compiler.compile_tenant("acme")
    assert fixed.ok, fixed.diagnostics
    assert fixed.registry is not registry
    assert fixed.registry.version != version
    assert "city" in fixed.registry.entity("crm.lead").field_names
    assert registry.entity("crm.lead").field_names == fields

    _rewrite(lead, working_text)
    again = compiler.compile_tenant("acme")
    assert again.ok and again.registry.version == version
