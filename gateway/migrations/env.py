"""Alembic's environment: runs on the connection gateway.db hands it (online only)."""

from alembic import context

from gateway.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
