"""`obsdeco.export()`: stored calls, sessions or agent spans of a range, written to a file."""

from __future__ import annotations

import importlib
import importlib.util
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal

from obsdeco.collector import checked_range
from obsdeco.file_export.tables import TABLES, ExportFilter, Table
from obsdeco.file_export.text_formats import CsvWriter, JsonLinesWriter, RowWriter
from obsdeco.runtime import flush, get_runtime

Format = Literal["jsonl", "csv", "parquet"]
FORMATS: tuple[Format, ...] = ("jsonl", "csv", "parquet")
SUFFIXES: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
}
"""File name suffixes the format is told from (any case)."""

DEFAULT_BATCH_SIZE = 1_000
"""Rows read from the store per page: an export holds about 10 MB per 1,000 calls without
content (the page's rows as read, as records and as written), plus their captured content."""

Target = str | os.PathLike[str] | IO[str] | IO[bytes]


def export(
    target: Target,
    what: str = "calls",
    format: str | None = None,
    *,
    project: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
    agent: str | None = None,
    session_id: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> int:
    """Write the stored `what` ("calls", "sessions" or "spans") of [since, until) to `target`
    and return the rows written; records still queued are flushed first.

    `target` is a path (written to a temporary file beside it, renamed into place when
    complete) or an open file: text or binary for "jsonl" and "csv", binary for "parquet".
    `format` is "jsonl", "csv" or "parquet", told from the path's suffix when None. The
    filters are those of `obsdeco.report()` plus `session_id`: calls by their timestamp,
    sessions and spans by when they started (see the README for each table's columns).
    Calls are priced with one price table for the whole export. The store is read a page of
    `batch_size` rows at a time, so memory does not grow with the range. With an
    `encryption_key` configured encrypted content and metadata are decrypted; without one
    they are written as stored (`obsdeco:v1:...` tokens).
    """
    if not isinstance(target, str | os.PathLike) and not hasattr(target, "write"):
        raise TypeError(f"target must be a path or an open file, got {type(target).__name__}")
    table = _table(what)
    chosen = _format(target, format)
    checked_range(since, until)
    if since is not None and until is not None and since > until:
        raise ValueError(f"since ({since.isoformat()}) is after until ({until.isoformat()})")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    parquet = _parquet_module() if chosen == "parquet" else None
    where = ExportFilter(project, since, until, model, agent, session_id)
    if isinstance(target, str | os.PathLike):
        path = Path(target)
        if not path.parent.is_dir():
            raise ValueError(f"cannot write {path}: there is no directory {path.parent}")
    flush()
    runtime = get_runtime()
    rows = table.pages(runtime.backend, where, runtime.prices, batch_size)
    if isinstance(target, str | os.PathLike):
        with _replaced(Path(target), binary=parquet is not None) as file:
            return _write(rows, _writer(file, table, chosen, parquet))
    if parquet is not None:
        if isinstance(target, io.TextIOBase):
            raise ValueError("Parquet is binary: give a file opened in binary mode ('wb')")
        return _write(rows, parquet.ParquetRowWriter(target, table.columns))
    if isinstance(target, io.TextIOBase):
        return _write(rows, _writer(target, table, chosen, None))
    text = io.TextIOWrapper(target, encoding="utf-8", newline="", write_through=True)  # type: ignore[arg-type]
    try:
        return _write(rows, _writer(text, table, chosen, None))
    finally:
        text.detach()


def _table(what: str) -> Table:
    table = TABLES.get(what)
    if table is None:
        known = ", ".join(repr(name) for name in TABLES)
        raise ValueError(f"what must be one of {known}, got {what!r}")
    return table


def _format(target: Target, given: str | None) -> Format:
    if given is not None:
        for known in FORMATS:
            if given == known:
                return known
        names = ", ".join(repr(name) for name in FORMATS)
        raise ValueError(f"format must be one of {names}, got {given!r}")
    if isinstance(target, str | os.PathLike):
        name = os.fspath(target)
    else:
        name = getattr(target, "name", None)
        if not isinstance(name, str):
            raise ValueError(
                "a file object has no suffix to tell the format from: give the format, "
                "'jsonl', 'csv' or 'parquet'"
            )
    found = SUFFIXES.get(Path(name).suffix.lower())
    if found is None:
        suffixes = ", ".join(SUFFIXES)
        raise ValueError(
            f"cannot tell the format of {name!r} from its suffix ({suffixes}): give the "
            "format, 'jsonl', 'csv' or 'parquet'"
        )
    return found


def _parquet_module() -> Any:
    if importlib.util.find_spec("pyarrow") is None:
        raise ValueError(
            "Parquet export needs pyarrow, which is not installed: pip install 'obsdeco[parquet]'"
        )
    return importlib.import_module("obsdeco.file_export.parquet")


def _writer(file: IO[Any], table: Table, chosen: Format, parquet: Any) -> RowWriter:
    if chosen == "jsonl":
        return JsonLinesWriter(file, table.columns)
    if chosen == "csv":
        return CsvWriter(file, table.columns)
    writer: RowWriter = parquet.ParquetRowWriter(file, table.columns)
    return writer


def _write(pages: Iterator[list[Any]], writer: RowWriter) -> int:
    written = 0
    for rows in pages:
        writer.write(rows)
        written += len(rows)
    writer.close()
    return written


@contextmanager
def _replaced(path: Path, binary: bool) -> Iterator[IO[Any]]:
    """A new file that becomes `path` when the block completes; on error `path` is left as it
    was and the partial file removed."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        if binary:
            with open(partial, "wb") as file:
                yield file
        else:
            with open(partial, "w", encoding="utf-8", newline="") as file:
                yield file
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
