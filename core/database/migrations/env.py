"""Alembic's environment: runs on the connection gateway.cli.db hands it (online only)."""

from alembic import context

from core.database.tables import metadata

connection = context.config.attributes["connection"]
# One transaction per migration: 0004 builds an index outside any (CONCURRENTLY).
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite",
                  transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
