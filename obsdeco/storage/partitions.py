"""PostgreSQL day partitions of `llm_calls` (by `timestamp`) and `agent_spans` (by `started_at`).

Each partition holds one UTC day, [midnight, next midnight), and is named after it:
`llm_calls_p20261201`. There is no DEFAULT partition: the partition a row needs is created
before the row is written (`DayPartitions.ensure`), so a row with a timestamp far in the past or
the future is stored like any other, and creating tomorrow's partition never has to scan a
default one. Partitions are made with `CREATE TABLE ... (LIKE parent)` then `ATTACH PARTITION`,
which locks the parent only in SHARE UPDATE EXCLUSIVE mode: writers and readers go on meanwhile.

Every function here takes a `Connection` on PostgreSQL and works in its search_path schema.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection, Engine, Table, text

from obsdeco.storage.base import WriteBatch
from obsdeco.storage.schema import agent_spans, llm_calls

PARTITIONED: dict[str, str] = {llm_calls.name: "timestamp", agent_spans.name: "started_at"}
"""Partitioned table -> the column whose UTC day picks the partition."""

DAYS_AHEAD = 7
"""Partitions are kept ready for today and this many days after it."""

_PARTITION_LOCK = 0x6F627370617274  # "obspart": the advisory lock of partition changes
CREATE_LOCK_TIMEOUT = "5s"
"""How long creating a partition waits for its lock (SHARE UPDATE EXCLUSIVE on the parent,
which writers and readers do not wait for)."""
DROP_LOCK_TIMEOUT = "1s"
"""How long dropping a partition waits for its lock (ACCESS EXCLUSIVE on the parent: writes
queue behind it meanwhile); on timeout the retention pass ends and the next one tries again."""


def partition_name(table: str, day: date) -> str:
    """The name of `table`'s partition holding `day`, e.g. llm_calls_p20261201."""
    return f"{table}_p{day.year:04d}{day.month:02d}{day.day:02d}"


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _midnight(day: date) -> str:
    return f"{day.isoformat()} 00:00:00+00"


def _end_of(day: date) -> str:
    """The upper bound of `day`'s partition: the next midnight (the last day has none)."""
    return "MAXVALUE" if day == date.max else f"'{_midnight(day + timedelta(days=1))}'"


def is_partitioned(connection: Connection, table: str) -> bool:
    """Whether `table` (in the search_path) is a partitioned table."""
    kind = connection.execute(
        text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:table)"), {"table": table}
    ).scalar()
    return kind == "p"


def existing_days(connection: Connection, table: str) -> set[date]:
    """The days of `table`'s partitions (those named by `partition_name`)."""
    names = connection.execute(
        text(
            "SELECT child.relname FROM pg_inherits "
            "JOIN pg_class child ON child.oid = pg_inherits.inhrelid "
            "WHERE pg_inherits.inhparent = to_regclass(:table)"
        ),
        {"table": table},
    ).scalars()
    pattern = re.compile(rf"{re.escape(table)}_p(\d{{8}})")
    days = set()
    for name in names:
        match = pattern.fullmatch(name)
        if match is not None:
            digits = match.group(1)
            days.add(date(int(digits[:4]), int(digits[4:6]), int(digits[6:])))
    return days


def lock_partitions(connection: Connection, lock_timeout: str = CREATE_LOCK_TIMEOUT) -> None:
    """Serialise changes of partitions (by every process) until `connection`'s transaction ends,
    and bound how long its statements wait for table locks."""
    connection.execute(text(f"SET LOCAL lock_timeout = '{lock_timeout}'"))
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PARTITION_LOCK})


def create_partitions(connection: Connection, table: str, days: Iterable[date]) -> set[date]:
    """Make sure `table` has a partition for each of `days` (inside `lock_partitions`); returns
    every day it has a partition for afterwards."""
    have = existing_days(connection, table)
    for day in sorted(set(days) - have):
        name = partition_name(table, day)
        connection.execute(
            text(f'CREATE TABLE "{name}" (LIKE "{table}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)')
        )
        connection.execute(
            text(
                f'ALTER TABLE "{table}" ATTACH PARTITION "{name}" FOR VALUES '
                f"FROM ('{_midnight(day)}') TO ({_end_of(day)})"
            )
        )
        have.add(day)
    return have


def days_ahead(today: date) -> list[date]:
    """Today and the `DAYS_AHEAD` days after it."""
    return [today + timedelta(days=offset) for offset in range(DAYS_AHEAD + 1)]


def create_days(connection: Connection, first: date, last: date) -> None:
    """Give `llm_calls` and `agent_spans` a partition for every day from `first` to `last`
    (included): what a bulk import by SQL needs before its rows go in."""
    days = [first + timedelta(days=offset) for offset in range((last - first).days + 1)]
    lock_partitions(connection)
    for table in PARTITIONED:
        create_partitions(connection, table, days)


_timestamp = attrgetter("timestamp")
_started_at = attrgetter("started_at")


class DayPartitions:
    """The partitions one store's writer knows exist, so that making sure a batch has its
    partitions costs a lookup in memory unless a day is new."""

    def __init__(self) -> None:
        self._known: dict[str, set[date]] = {table: set() for table in PARTITIONED}
        self._lock = threading.Lock()

    def prepare(self, connection: Connection, today: date) -> None:
        """At store open: create today's partitions and the days ahead, note what exists."""
        lock_partitions(connection)
        for table in PARTITIONED:
            self._known[table] = create_partitions(connection, table, days_ahead(today))

    def ensure(self, engine: Engine, batch: WriteBatch) -> None:
        """Create, in a short transaction of their own, the partitions the batch's rows need
        that are not known to exist (and the days ahead of today while at it)."""
        missing = {
            table: days
            for table, days in (
                (llm_calls.name, self._missing(llm_calls.name, batch.calls, _timestamp)),
                (agent_spans.name, self._missing(agent_spans.name, batch.spans, _started_at)),
            )
            if days
        }
        if not missing:
            return
        ahead = days_ahead(datetime.now(UTC).date())
        with self._lock, engine.begin() as connection:
            lock_partitions(connection)
            for table, days in missing.items():
                self._known[table] = create_partitions(connection, table, [*days, *ahead])

    def forget(self) -> None:
        """Read the partitions from the database again next time (some were dropped)."""
        with self._lock:
            for known in self._known.values():
                known.clear()

    def _missing(self, table: str, rows: Sequence[Any], moment: attrgetter[datetime]) -> set[date]:
        if not rows:
            return set()
        known = self._known[table]
        first, last = utc_day(min(map(moment, rows))), utc_day(max(map(moment, rows)))
        span = (last - first).days
        if all(first + timedelta(days=offset) in known for offset in range(span + 1)):
            return set()
        return {utc_day(moment(row)) for row in rows} - known


def partition_existing(connection: Connection) -> None:
    """Convert the unpartitioned `llm_calls` and `agent_spans` of an earlier obsdeco into day
    partitions, every row kept (PostgreSQL only; a table already partitioned is left alone).

    Each table is renamed aside, created anew partitioned (with its indexes), given a partition
    for every day its rows fall on and the days ahead, filled from the old one, which is then
    dropped. Run it in one transaction: it either converts both tables or changes nothing.
    The columns must be those of the current schema (run the column upgrades first). On
    another database it does nothing.
    """
    if connection.dialect.name != "postgresql":
        return
    lock_partitions(connection)
    connection.execute(text("SET LOCAL lock_timeout = 0"))  # a migration waits its turn
    for table in (llm_calls, agent_spans):
        if _exists(connection, table.name) and not is_partitioned(connection, table.name):
            _convert(connection, table)


def _convert(connection: Connection, table: Table) -> None:
    old = f"{table.name}_unpartitioned"
    column = PARTITIONED[table.name]
    connection.execute(text(f'ALTER TABLE "{table.name}" RENAME TO "{old}"'))
    for constraint in connection.execute(
        text(
            "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(:old) AND contype = 'p'"
        ),
        {"old": old},
    ).scalars():
        connection.execute(text(f'ALTER TABLE "{old}" DROP CONSTRAINT "{constraint}"'))
    for index in table.indexes:
        connection.execute(text(f'DROP INDEX IF EXISTS "{index.name}"'))
    table.create(connection)
    days = connection.execute(
        text(f'SELECT DISTINCT ("{column}" AT TIME ZONE \'UTC\')::date FROM "{old}"')
    ).scalars()
    create_partitions(connection, table.name, [*days, *days_ahead(datetime.now(UTC).date())])
    columns = ", ".join(f'"{column.name}"' for column in table.columns)
    connection.execute(
        text(f'INSERT INTO "{table.name}" ({columns}) SELECT {columns} FROM "{old}"')
    )
    connection.execute(text(f'DROP TABLE "{old}"'))


_COPIED = "INCLUDING DEFAULTS INCLUDING COMMENTS"


def unpartition_existing(connection: Connection) -> None:
    """The reverse of `partition_existing` (a migration's downgrade): `llm_calls` and
    `agent_spans` as the plain tables of earlier releases, keyed by `id` alone, every row kept.
    Fails, changing nothing, when two stored rows share an id (possible only on different
    days). On another database it does nothing."""
    if connection.dialect.name != "postgresql":
        return
    connection.execute(text("SET LOCAL lock_timeout = 0"))
    for table in (llm_calls, agent_spans):
        if not is_partitioned(connection, table.name):
            continue
        plain = f"{table.name}_plain"
        connection.execute(text(f'CREATE TABLE "{plain}" (LIKE "{table.name}" {_COPIED})'))
        connection.execute(text(f'INSERT INTO "{plain}" SELECT * FROM "{table.name}"'))
        connection.execute(text(f'DROP TABLE "{table.name}" CASCADE'))
        connection.execute(text(f'ALTER TABLE "{plain}" RENAME TO "{table.name}"'))
        connection.execute(text(f'ALTER TABLE "{table.name}" ADD PRIMARY KEY (id)'))
        for index in table.indexes:
            index.create(connection)


def _exists(connection: Connection, table: str) -> bool:
    return (
        connection.execute(text("SELECT to_regclass(:table)"), {"table": table}).scalar()
        is not None
    )


def is_missing_partition(error: BaseException) -> bool:
    """Whether `error` is PostgreSQL's refusal of a row no partition holds."""
    cause = getattr(error, "orig", error)
    return getattr(cause, "sqlstate", None) == "23514" and "no partition" in str(cause)
