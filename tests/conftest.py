"""Shared pytest fixtures. Keep each section small; one section per concern."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# tests/ is not a package: make tests/audiofiles.py importable from every test module
sys.path.insert(0, str(Path(__file__).parent))

import audiofiles  # noqa: E402


# ---------------------------------------------------------------- real audio files
@pytest.fixture(scope="session")
def audio_cache(tmp_path_factory) -> Path:
    """One directory per test session where each distinct audio file is encoded once."""
    return tmp_path_factory.mktemp("audio-cache")


@pytest.fixture
def audio_factory(audio_cache, tmp_path) -> audiofiles.AudioFactory:
    """``audio_factory(fmt, name=None, seconds=8.0, tags=None, cover=None, ...) -> Path``:
    a fresh copy of a real encoded file in this test's ``tmp_path``."""
    return audiofiles.AudioFactory(audio_cache, tmp_path)


@pytest.fixture(scope="session")
def all_formats() -> list[str]:
    """Every format tagger supports: mp3, flac, ogg, opus, m4a, wav, aiff."""
    return list(audiofiles.FORMATS)


# ---------------------------------------------------------------- services, models, the CLI
from services import gtzan, pg_url, redis_url, settings, test_model_dir  # noqa: E402,F401


# ---------------------------------------------------------------- the default model's student
def _student_setting(on: bool):
    """The ``student`` setting for one test, put back as it was afterwards."""
    from tagger.models import runtime

    was = runtime.wants_student()
    runtime.set_student(on)
    try:
        yield
    finally:
        runtime.set_student(was)


@pytest.fixture
def student_on():
    """The default model's student hears each track first (it is off by default)."""
    yield from _student_setting(True)


@pytest.fixture
def teacher_alone():
    """The default model's networks hear every track (the student off, as by default)."""
    yield from _student_setting(False)
