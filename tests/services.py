"""Fixtures for the real parts tagger runs on: databases, Redis, a real model, the CLI.

Loaded from conftest.py. Redis and PostgreSQL are the real servers on
127.0.0.1 (.ci/run starts them when they are down).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from tagger import config

ROOT = Path(__file__).resolve().parents[1]
GTZAN = ROOT.parent / "shared" / "datasets" / "gtzan"
REDIS_URL = os.environ.get("TAGGER_TEST_REDIS", "redis://127.0.0.1:6379/15")
PG_ADMIN_URL = os.environ.get("TAGGER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TEST_MODEL = "test-logreg"


@pytest.fixture(scope="session")
def gtzan() -> Path:
    assert GTZAN.is_dir(), f"the shared GTZAN copy is expected at {GTZAN}"
    return GTZAN


@pytest.fixture(scope="session")
def test_model_dir(tmp_path_factory, gtzan) -> Path:
    """A small real model: logistic regression on MFCC statistics of 40 GTZAN clips.

    Real audio, real features, real scikit-learn: the fallback's code path,
    cheap enough to train once per test session (a few seconds).
    """
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tagger import audio, features

    x, y = [], []
    for genre in ("blues", "classical", "jazz", "metal", "pop"):
        for clip_path in sorted((gtzan / genre).glob("*.mp3"))[:8]:
            x.append(features.mfcc_stats(audio.load_clip(clip_path, n_windows=4).windows))
            y.append(genre)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=10, max_iter=3000)).fit(np.array(x), y)
    root = tmp_path_factory.mktemp("models")
    d = root / TEST_MODEL
    d.mkdir()
    joblib.dump(model, d / "model.joblib")
    (d / "card.json").write_text(json.dumps({
        "name": TEST_MODEL, "version": "1", "kind": "sklearn_mfcc", "labels": sorted(set(y)),
        "file": "model.joblib", "features": features.MFCC_STATS_PARAMS,
        "metrics": {"note": "test fixture, 40 GTZAN clips, not a shipped model"},
    }))
    return root


@pytest.fixture
def settings(tmp_path, test_model_dir) -> config.Settings:
    """Embedded-default settings in a private data folder, using the test model."""
    return config.load({"data_dir": tmp_path / "data", "model": TEST_MODEL, "model_dirs": [str(test_model_dir)],
                        "workers": 2, "min_confidence": 0.0}, environ={}, config_file=tmp_path / "none.toml")


def _redis_client():
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"Redis is not running at {REDIS_URL} (.ci/run starts it)")
    return client


@pytest.fixture
def redis_url() -> str:
    client = _redis_client()
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


@pytest.fixture
def pg_url() -> str:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"tagger_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL is not usable at {PG_ADMIN_URL}: {exc}")
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    from tagger.db import engine as engine_mod

    for url in [u for u in engine_mod._engines if u.endswith("/" + name)]:
        engine_mod._engines.pop(url).dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def cli_env(settings: config.Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    env.update(settings.to_env())
    env.update({"TAGGER_MODEL": settings.model, "TAGGER_WORKERS": str(settings.workers),
                "TAGGER_MIN_CONFIDENCE": str(settings.min_confidence),
                "TAGGER_CONFIG": os.devnull})  # an empty config: not the user's
    env.update(extra)
    return env


def run_cli(settings: config.Settings, *args: str, timeout: float = 240, **extra: str) -> subprocess.CompletedProcess:
    """Run ``tagger ARGS`` as a user would: a real process with the settings in its environment."""
    return subprocess.run([sys.executable, "-m", "tagger", *args], env=cli_env(settings, **extra),
                          capture_output=True, text=True, timeout=timeout)
