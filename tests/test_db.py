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


@pytest.mark.parametrize("after", [1, 4, 9])
def test_a_process_killed_mid_upgrade_leaves_a_database_the_next_one_migrates(tmp_path, after):
    """The process dies (no cleanup, as kill -9) after the upgrade's ``after``-th CREATE or ALTER:
    the fault suite's scan-kill9 found a first scan killed so left tables made, no version
    stamped, and every later scan failing on 'table files already exists'."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'killed.sqlite3'}"
    code = f"""
import os
from sqlalchemy import Engine, event
seen = [0]
@event.listens_for(Engine, "after_cursor_execute")
def die(conn, cursor, statement, *args):
    if statement.lstrip().upper().startswith(("CREATE", "ALTER")):
        seen[0] += 1
        if seen[0] == {after}:
            os._exit(9)
from tagger.db import engine
engine.ensure_schema({url!r}, auto_upgrade=True)
"""
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr
    engine.ensure_schema(url, auto_upgrade=True)  # the next run: failed before
    assert set(inspect(engine.engine_for(url)).get_table_names()) == TABLES
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
