"""CSV import for any entity: `metacrm import`, the admin's import page (see docs/import.md).

    result = import_csv(service, "customer.customer", Path("customers.csv"),
                        dry_run=True, report=Path("errors.csv"))
"""

from __future__ import annotations

from .columns import CellError, HeaderError, HeaderMap, map_header
from .run import (
    DEFAULT_BATCH,
    Importer,
    ImportFailed,
    ImportResult,
    ReportWriter,
    RowError,
    data_rows,
    import_csv,
)

__all__ = [
    "DEFAULT_BATCH",
    "CellError",
    "HeaderError",
    "HeaderMap",
    "ImportFailed",
    "ImportResult",
    "Importer",
    "ReportWriter",
    "RowError",
    "data_rows",
    "import_csv",
    "map_header",
]
