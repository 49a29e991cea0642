"""JSON Lines and CSV: rows written as text, page by page."""

from __future__ import annotations

import csv
import json
from typing import IO, Protocol

from obsdeco.file_export.columns import TEXT_KINDS, Column
from obsdeco.file_export.tables import Row

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a CSV cell as a formula (OWASP's list): such text cells get a
leading apostrophe, which spreadsheets show as text and do not evaluate."""


class RowWriter(Protocol):
    """Writes the rows of one table to one file, in the table's column order."""

    def write(self, rows: list[Row]) -> None:
        """Add rows."""

    def close(self) -> None:
        """Finish the file (the target file object itself is left open)."""


def _indexes(columns: tuple[Column, ...], *kinds: str) -> list[int]:
    return [index for index, column in enumerate(columns) if column.kind in kinds]


_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


class JsonLinesWriter:
    """One JSON object per line, keys in column order; timestamps as ISO 8601 text, JSON
    columns as nested objects. Non-ASCII text is written as UTF-8, except U+2028 and U+2029,
    escaped so that no line-splitting reader breaks a record."""

    def __init__(self, file: IO[str], columns: tuple[Column, ...]) -> None:
        self._file = file
        self._names = [column.name for column in columns]
        self._timestamps = _indexes(columns, "timestamp")

    def write(self, rows: list[Row]) -> None:
        names, timestamps = self._names, self._timestamps
        lines = []
        for row in rows:
            values = list(row)
            for index in timestamps:
                moment = values[index]
                if moment is not None:
                    values[index] = moment.isoformat(timespec="microseconds")
            lines.append(_json(dict(zip(names, values, strict=True))))
        if not lines:
            return
        text = "\n".join(lines) + "\n"
        if "\u2028" in text or "\u2029" in text:
            text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        self._file.write(text)

    def close(self) -> None:
        self._file.flush()


class CsvWriter:
    """RFC 4180 CSV (comma, double quotes where needed, CRLF) with a header row. Empty cells
    are missing values; booleans are true/false; timestamps ISO 8601; JSON columns compact
    JSON text. Text cells starting with a `FORMULA_STARTS` character get a leading
    apostrophe."""

    def __init__(self, file: IO[str], columns: tuple[Column, ...]) -> None:
        self._file = file
        self._writer = csv.writer(file)
        self._writer.writerow([column.name for column in columns])
        self._timestamps = _indexes(columns, "timestamp")
        self._booleans = _indexes(columns, "boolean")
        self._json = _indexes(columns, "json")
        self._text = _indexes(columns, *TEXT_KINDS)

    def write(self, rows: list[Row]) -> None:
        out = []
        for row in rows:
            values = list(row)
            for index in self._timestamps:
                moment = values[index]
                if moment is not None:
                    values[index] = moment.isoformat(timespec="microseconds")
            for index in self._booleans:
                flag = values[index]
                if flag is not None:
                    values[index] = "true" if flag else "false"
            for index in self._json:
                document = values[index]
                if document is not None:
                    values[index] = _json(document)
            for index in self._text:
                text = values[index]
                if text and text.startswith(FORMULA_STARTS):
                    values[index] = "'" + text
            out.append(values)
        self._writer.writerows(out)

    def close(self) -> None:
        self._file.flush()
