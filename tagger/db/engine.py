"""URL → engine and sessions; migrations applied through Alembic only."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tagger.errors import ConfigError

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the scanner read progress while workers write; the busy timeout
    # makes concurrent writers wait instead of failing
    cur.execute("PRAGMA busy_timeout=60000")  # first: switching to WAL itself may have to wait
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def engine_for(url: str) -> Engine:
    """One engine per URL per process."""
    with _lock:
        if url not in _engines:
            if url.startswith("sqlite:///"):
                Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
            try:
                engine = create_engine(url, pool_pre_ping=True)
            except Exception as exc:  # bad URL, missing driver
                raise ConfigError(f"cannot use database URL {url!r}: {exc}") from None
            if engine.dialect.name == "sqlite":
                event.listen(engine, "connect", _sqlite_pragmas)
            _engines[url] = engine
        return _engines[url]


def sessionmaker_for(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = sessionmaker_for(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str):
    from alembic.config import Config

    import migrations

    here = Path(migrations.__file__).resolve().parent
    cfg = Config()
    cfg.set_main_option("script_location", str(here))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply the Alembic migrations up to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine_for(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


@contextmanager
def _migration_lock(url: str) -> Iterator[None]:
    """Serialise migrations of one SQLite file between the processes that start together."""
    if not url.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_path = Path(url[len("sqlite:///"):]).expanduser().with_suffix(".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_schema(url: str, auto_upgrade: bool) -> None:
    """Make sure the database is at the latest migration.

    The embedded SQLite database is upgraded automatically; a shared server
    database is only checked (``tagger db upgrade`` changes it), since several
    workers and versions may use it at once.
    """
    if current_revision(url) == head_revision(url):
        return
    if auto_upgrade:
        with _migration_lock(url):
            if current_revision(url) != head_revision(url):  # another process may have done it
                upgrade(url)
        return
    tables = inspect(engine_for(url)).get_table_names()
    state = "is empty" if not tables else "is not at the latest schema"
    raise ConfigError(f"the database {state}: run `tagger db upgrade`")
