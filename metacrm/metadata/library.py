"""Where definitions live on disk: the module library and the tenants folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

YAML_SUFFIXES = (".yaml", ".yml")
MODULE_MANIFEST = "module.yaml"
TENANT_FILE = "tenant.yaml"


@dataclass(frozen=True, slots=True)
class Library:
    """A project's definitions: ``metadata/modules/<name>/`` and ``tenants/<slug>/``."""

    root: Path
    modules_dirs: tuple[Path, ...]
    tenants_dir: Path

    @classmethod
    def at(cls, root: Path | str) -> Library:
        root = Path(root).resolve()
        return cls(root, (root / "metadata" / "modules",), root / "tenants")

    def display(self, path: Path) -> str:
        """A path as shown in diagnostics: relative to the project root when inside it."""
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def module_dirs(self, extra: tuple[Path, ...] = ()) -> list[Path]:
        """Every folder holding a module.yaml, in search order (tenant-local ones last)."""
        found = []
        for base in (*self.modules_dirs, *extra):
            if base.is_dir():
                found.extend(sorted(p.parent for p in base.glob(f"*/{MODULE_MANIFEST}")))
        return found

    def tenant_slugs(self) -> list[str]:
        if not self.tenants_dir.is_dir():
            return []
        return sorted(p.parent.name for p in self.tenants_dir.glob(f"*/{TENANT_FILE}"))

    def tenant_file(self, slug: str) -> Path:
        return self.tenants_dir / slug / TENANT_FILE


def definition_files(folder: Path) -> list[Path]:
    """Every YAML file below `folder`, sorted, so the order is the same on every machine."""
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())
