"""Regenerate the stores written by earlier releases that the upgrade tests start from.

For each release commit: a temporary worktree of the repository at that commit, then
`write_store.py` run with PYTHONPATH there into a new SQLite file (`sqlite-<commit>.db`) and
into a new PostgreSQL schema, dumped as plain SQL without its schema name
(`postgresql-<commit>.sql`, loaded by the tests into a schema of their own). Run from the
repository root: `python tests/data/stores/generate.py [POSTGRES_URL]`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import make_url

RELEASES = ("ac4868d", "c7b7835", "0e18ecf")
"""Earlier releases: before the hourly rollups (no `repeated`, no rollups), with rollups but
32-bit token columns and no provider names, and the previous one."""
HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parents[2]
SCHEMA = "obsdeco_fixture_store"
_DUMP = ("pg_dump", "--no-owner", "--no-privileges", "--inserts")
_DUMP_NOISE = ("--", "\\", "SET ", "SELECT pg_catalog.set_config", "CREATE SCHEMA")


def git(*arguments: str) -> None:
    subprocess.run(["git", "-C", str(REPOSITORY), *arguments], check=True)


def write(checkout: Path, url: str) -> None:
    environment = {**os.environ, "PYTHONPATH": str(checkout)}
    subprocess.run([sys.executable, str(HERE / "write_store.py"), url], check=True, env=environment)


def sqlite_fixture(checkout: Path, commit: str) -> None:
    target = HERE / f"sqlite-{commit}.db"
    target.unlink(missing_ok=True)
    write(checkout, f"sqlite:///{target}")


def postgresql_fixture(checkout: Path, commit: str, postgres_url: str) -> None:
    admin = sqlalchemy.create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE SCHEMA {SCHEMA}"))
    try:
        url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={SCHEMA}"})
        write(checkout, url.render_as_string(hide_password=False))
        libpq = make_url(postgres_url).set(drivername="postgresql")
        dump = subprocess.run(
            [*_DUMP, f"--schema={SCHEMA}", "--dbname", libpq.render_as_string(hide_password=False)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP SCHEMA {SCHEMA} CASCADE"))
        admin.dispose()
    statements = [
        line.replace(f"{SCHEMA}.", "")
        for line in dump.splitlines()
        if line and not line.startswith(_DUMP_NOISE)
    ]
    (HERE / f"postgresql-{commit}.sql").write_text("\n".join(statements) + "\n")


def main(postgres_url: str) -> None:
    for commit in RELEASES:
        with tempfile.TemporaryDirectory() as parent:
            checkout = Path(parent) / commit
            git("worktree", "add", "--detach", str(checkout), commit)
            try:
                sqlite_fixture(checkout, commit)
                postgresql_fixture(checkout, commit, postgres_url)
            finally:
                git("worktree", "remove", "--force", str(checkout))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "postgresql+psycopg://postgres@127.0.0.1:5432/test")
