"""Export to files: stored calls, sessions and agent spans as JSON Lines, CSV or Parquet."""

from obsdeco.file_export.api import FORMATS, SUFFIXES, export
from obsdeco.file_export.tables import TABLES

EXPORTS: tuple[str, ...] = tuple(TABLES)
"""What `export(what=...)` takes."""

__all__ = ["EXPORTS", "FORMATS", "SUFFIXES", "export"]
