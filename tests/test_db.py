"""Migrations on real databases, from empty."""
import pytest
from sqlalchemy import inspect

from tagger.db import engine
from tagger.errors import ConfigError

TABLES = {"scans", "files", "analyses", "predictions", "tag_changes", "errors", "alembic_version"}


def test_sqlite_migrates_from_empty(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    engine.ensure_schema(url, auto_upgrade=True)
    assert set(inspect(engine.engine_for(url)).get_table_names()) == TABLES
    assert engine.current_revision(url) == engine.head_revision(url)


def test_postgresql_is_upgraded_only_on_request(pg_url):
    with pytest.raises(ConfigError, match="tagger db upgrade"):
        engine.ensure_schema(pg_url, auto_upgrade=False)
    engine.upgrade(pg_url)
    assert set(inspect(engine.engine_for(pg_url)).get_table_names()) == TABLES
    engine.ensure_schema(pg_url, auto_upgrade=False)  # now it passes


def test_processes_starting_together_migrate_one_sqlite_file_once(tmp_path):
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'race.sqlite3'}"
    code = f"from tagger.db import engine; engine.ensure_schema({url!r}, auto_upgrade=True)"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    assert engine.current_revision(url) == engine.head_revision(url)


def test_migrations_match_the_orm_schema(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from tagger.db.schema import Base

    url = f"sqlite:///{tmp_path / 'drift.sqlite3'}"
    engine.upgrade(url)
    with engine.engine_for(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
