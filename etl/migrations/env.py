"""Alembic environment: runs the migrations on the URL given by gridwatch.etl.database.

The declared tables (:mod:`gridwatch.etl.schema`) are the target, so ``alembic revision
--autogenerate`` drafts the next migration from a change to them.
"""
from alembic import context

from gridwatch.etl.database import engine_for
from gridwatch.etl.schema import include_object, metadata

url = context.config.attributes["url"]
engine = engine_for(url)
with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True, target_metadata=metadata,
                      include_object=include_object, compare_server_default=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
