"""Alembic environment: driftpilot passes its own connection in ``config.attributes['connection']``."""

from alembic import context

from controller.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `driftpilot db upgrade` (controller.db.upgrade), not bare alembic")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
