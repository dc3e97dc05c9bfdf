"""Alembic environment: runs the migrations on the URL given by gridwatch.etl.database.

The declared tables (:mod:`gridwatch.etl.schema`) are the target, so ``alembic revision
--autogenerate`` drafts the next migration from a change to them.
"""
import sqlalchemy as sa
from alembic import context

from gridwatch.etl.database import SCHEMA_LOCK, engine_for
from gridwatch.etl.schema import include_object, metadata

url = context.config.attributes["url"]
engine = engine_for(url)
with engine.connect() as connection:
    connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK})  # one upgrade at a time
    connection.commit()
    try:
        context.configure(connection=connection, transaction_per_migration=True, target_metadata=metadata,
                          include_object=include_object, compare_server_default=True)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK})
        connection.commit()
engine.dispose()
