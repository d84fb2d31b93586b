"""Alembic environment: the URL comes from the caller's config (tagger.db.engine)."""
from alembic import context
from sqlalchemy import engine_from_config, event, pool

from tagger.db.schema import Base

config = context.config
target_metadata = Base.metadata


def run_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _wait_when_busy(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()


def _driver_leaves_transactions_to_us(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None


def _begin(conn) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def run_online() -> None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool)
    if connectable.dialect.name == "sqlite":
        # the busy timeout of tagger's own connections: processes that start together wait
        # for each other instead of failing on a locked file (foreign keys stay off here, as
        # batch migrations copy and drop tables)
        event.listen(connectable, "connect", _wait_when_busy)
        # the upgrade is one transaction, DDL included: pysqlite commits before every CREATE
        # or ALTER on its own, so a process killed mid-upgrade left some tables made and no
        # version stamped, a database no later run could migrate ("table files already exists")
        event.listen(connectable, "connect", _driver_leaves_transactions_to_us)
        event.listen(connectable, "begin", _begin)
    with connectable.connect() as connection:
        # batch mode lets later migrations alter SQLite tables
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
