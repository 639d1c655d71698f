"""Shared fixtures: the project's own library and throw-away libraries written per test."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from metacrm.metadata.compiler import Compiler
from metacrm.metadata.library import Library

PROJECT_ROOT = Path(__file__).resolve().parent.parent

WriteLibrary = Callable[[Mapping[str, str]], Library]


@pytest.fixture
def project_library() -> Library:
    """The definitions shipped in this repository (metadata/modules, tenants)."""
    return Library.at(PROJECT_ROOT)


@pytest.fixture
def project_compiler(project_library: Library) -> Compiler:
    return Compiler(project_library)


def write_files(root: Path, files: Mapping[str, str]) -> None:
    """Write `{relative path: YAML text}` below `root`, dedenting each text."""
    for relative, text in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip("\n"), "utf-8")


@pytest.fixture
def write_library(tmp_path: Path) -> WriteLibrary:
    """Write a small library (paths relative to the project root) and return it.

    Example: ``write_library({"metadata/modules/crm/module.yaml": "module: crm\\nowner: t\\n"})``
    """
    def write(files: Mapping[str, str]) -> Library:
        write_files(tmp_path, files)
        return Library.at(tmp_path)

    return write


pytest_plugins = ["dbfixtures"]  # tests/dbfixtures.py: the SQLite + PostgreSQL backends
