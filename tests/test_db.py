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
