"""Golden fixtures per compiler pass (the sqlglot way).

Each folder below tests/fixtures/golden/ is one small library (metadata/modules/...
and exactly one tenants/<slug>/) plus what each pass must produce from it:

    01_documents.json  the files as loaded and schema-checked, with line marks
    02_scopes.json     the resolved drafts of every scope (base + overlays)
    03_registry.json   the compiled Registry (or the diagnostics saying why not)

To (re)write the expected files after an intended change, run

    METACRM_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_compiler_golden.py

then read the diff: a golden file is a claim that its content is *correct*, not
merely what the code produces today.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from metacrm.metadata.compiler import Compiler
from metacrm.metadata.library import MODULE_MANIFEST, Library
from metacrm.metadata.snapshot import snapshot_documents, snapshot_registry, snapshot_scopes

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "golden"
UPDATE = os.environ.get("METACRM_UPDATE_GOLDEN") == "1"
PASSES = ("01_documents", "02_scopes", "03_registry")
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()) if GOLDEN.is_dir() else []

_snapshots: dict[str, dict[str, Any]] = {}


def dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def compile_case(case: str) -> dict[str, Any]:
    """Every pass's snapshot for one case, computed once per session."""
    if case in _snapshots:
        return _snapshots[case]
    library = Library.at(GOLDEN / case)
    slugs = library.tenant_slugs()
    assert len(slugs) == 1, f"golden case {case} must hold exactly one tenant, found {slugs}"
    compiler = Compiler(library)
    trace: dict[str, Any] = {}
    result = compiler.compile_tenant(slugs[0], trace=trace)
    assert trace, f"{case}: the tenant file itself did not load: {result.diagnostics}"
    loaded = [trace["tenant"]]
    for source in trace["sources"].values():
        loaded.append(compiler.store.load(source.directory / MODULE_MANIFEST))
        loaded.extend(source.loaded)
    for _unit, _team, items in trace["layers"]:
        loaded.extend(items)
    _snapshots[case] = {
        "01_documents": snapshot_documents(loaded),
        "02_scopes": snapshot_scopes(trace["scopes"]),
        "03_registry": snapshot_registry(result.registry, result.diagnostics),
    }
    return _snapshots[case]


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 6


@pytest.mark.parametrize("step", PASSES)
@pytest.mark.parametrize("case", CASES)
def test_pass_matches_golden(case: str, step: str) -> None:
    actual = dump(compile_case(case)[step])
    target = GOLDEN / case / f"{step}.json"
    if UPDATE:
        if not target.exists() or target.read_text("utf-8") != actual:
            target.write_text(actual, "utf-8")
        return
    assert target.exists(), f"{target} is missing; run with METACRM_UPDATE_GOLDEN=1"
    expected = target.read_text("utf-8")
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            f"expected/{case}/{step}.json",
                                            f"actual/{case}/{step}.json", n=2))
        pytest.fail(f"{case}/{step} differs from its golden file "
                    f"(METACRM_UPDATE_GOLDEN=1 rewrites it):\n{diff}", pytrace=False)


@pytest.mark.parametrize("case", CASES)
def test_snapshots_are_deterministic(case: str) -> None:
    """A second Compiler over the same files yields the very same snapshots."""
    first = {k: dump(v) for k, v in compile_case(case).items()}
    _snapshots.pop(case)
    assert {k: dump(v) for k, v in compile_case(case).items()} == first


def test_golden_versions_match_the_trace() -> None:
    """The version in 03_registry is the content hash the resolve pass computed."""
    for case in CASES:
        library = Library.at(GOLDEN / case)
        trace: dict[str, Any] = {}
        result = Compiler(library).compile_tenant(library.tenant_slugs()[0], trace=trace)
        if result.registry is not None:
            assert result.registry.version == trace["version"]


def test_snapshots_share_nothing_with_the_compiler() -> None:
    """Changing a snapshot must not change the compiled drafts it was taken from."""
    library = Library.at(GOLDEN / "tenant_overlay")
    trace: dict[str, Any] = {}
    Compiler(library).compile_tenant("acme", trace=trace)
    before = dump(snapshot_scopes(trace["scopes"]))
    snapshot = snapshot_scopes(trace["scopes"])
    snapshot[0]["entities"]["sales.lead"]["spec"]["label"]["en"] = "changed"
    snapshot[0]["entities"]["sales.lead"]["fields"][0]["spec"]["label"]["en"] = "changed"
    assert dump(snapshot_scopes(trace["scopes"])) == before
