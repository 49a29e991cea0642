"""Parquet through pyarrow (the `parquet` extra): typed columns, rows buffered into row groups
of a bounded size."""

from __future__ import annotations

import json
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from obsdeco.file_export.columns import Column, ColumnKind
from obsdeco.file_export.tables import Row

_TYPES: dict[ColumnKind, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "json": pa.string(),
}

ROW_GROUP_ROWS = 65_536
ROW_GROUP_BYTES = 64 * 1024 * 1024
"""A row group is written once it holds this many rows or this many bytes, whichever comes
first: large enough for readers to scan fast, small enough to bound the memory held."""


def schema(columns: tuple[Column, ...]) -> pa.Schema:
    """The Parquet schema of a table; each field's meaning is in its "description" metadata."""
    return pa.schema(
        [
            pa.field(column.name, _TYPES[column.kind], metadata={"description": column.meaning})
            for column in columns
        ]
    )


def _dumped(values: tuple[object, ...]) -> list[str | None]:
    return [None if value is None else json.dumps(value, ensure_ascii=False) for value in values]


class ParquetRowWriter:
    """Writes rows to a binary file as one Parquet file; `close()` writes its footer."""

    def __init__(self, file: IO[bytes], columns: tuple[Column, ...]) -> None:
        self._schema = schema(columns)
        self._json = {index for index, column in enumerate(columns) if column.kind == "json"}
        self._writer = pq.ParquetWriter(file, self._schema)
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_bytes = 0

    def write(self, rows: list[Row]) -> None:
        if not rows:
            return
        columns = zip(*rows, strict=True)
        arrays = [
            pa.array(_dumped(values) if index in self._json else values, type=field.type)
            for index, (values, field) in enumerate(zip(columns, self._schema, strict=True))
        ]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self._schema)
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self._pending_bytes += batch.nbytes
        if self._pending_rows >= ROW_GROUP_ROWS or self._pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending, schema=self._schema))
        self._pending = []
        self._pending_rows = self._pending_bytes = 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
