"""obsdeco's schema history as Alembic revisions: `versions/` (one linear chain from `0001`,
the first release's store), the environment they run in (`env.py`), where a store stands
among them (`state`, read without Alembic; `revisions`, with it), the upgrade and downgrade
(`runner`), the lock schema changes take (`locking`) and what the revisions share
(`helpers`). `obsdeco.storage.schema_setup` brings a store up to date with them.

A new revision: a file in `versions/` whose `down_revision` is the current head, written
with `alembic.command.revision(revisions.config(connection), message, rev_id="0007")` or by
hand, and `state.HEAD` moved to it; `tests/test_migrations.py` checks that taking an empty
database through every revision gives exactly the tables `obsdeco.storage.schema.metadata`
defines.
"""
