"""Alembic environment for the platform store's own tables (see metacrm.platform.store).

Run programmatically by ``PlatformStore.upgrade`` with a connection and schema passed in
``config.attributes``; the tenants' tables are planned by metacrm's own planner instead.
"""

from alembic import context

connection = context.config.attributes["connection"]
schema = context.config.attributes.get("schema")
context.configure(connection=connection, version_table_schema=schema,
                  transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations(schema=schema)
