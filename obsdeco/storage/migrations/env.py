"""Alembic's environment for obsdeco's revisions: they run on the connection the caller gives
(`config.attributes["connection"]`), inside the caller's transaction, which the caller commits
(see `obsdeco.storage.migrations`). Tables of others sharing the database (a response
cache's, an application's) are no part of obsdeco's schema: autogenerate leaves them alone."""

from alembic import context

from obsdeco.storage.migrations.state import VERSION_TABLE
from obsdeco.storage.schema import metadata

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    include_name=lambda name, kind, _parents: kind != "table" or name in metadata.tables,
)
with context.begin_transaction():
    context.run_migrations()
