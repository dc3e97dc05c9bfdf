"""Alembic environment: runs the migrations on the URL given by etl.database."""
from alembic import context

from etl.database import engine_for

url = context.config.attributes["url"]
engine = engine_for(url)
with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
