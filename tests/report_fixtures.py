"""A results database with a history, for the report tests: three real scans of real files.

Scan 1 (backdated to 2024-01-10) tags four GTZAN clips whose names hold quotes, ``<``, ``&``,
a newline and a byte that is not UTF-8, and fails on two bad files. Scan 2 (2024-03-05) runs
with ``min_confidence`` 1.0 over three more clips, so every prediction is low confidence. Scan 3
(today) goes over the whole library: seven files are unchanged, the two bad ones fail again.
The scans run in-process (record the files, then ``pipeline.analyse`` each analysis, as a
worker would); only their start times are moved into the past.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import audiofiles
import pytest
from services import TEST_MODEL
from sqlalchemy import select

from tagger import config, discover, pipeline, scan
from tagger.db import schema as s
from tagger.db.engine import session_scope

#: file name (bytes: one is not UTF-8) → GTZAN genre (its last clip is copied)
TAGGED = {b'blues "quoted" <b>&amp; more.mp3': "blues", b"classical\nsecond line.mp3": "classical",
          b"m\xe9tal caf\xff.mp3": "metal",  # Latin-1 bytes: not UTF-8
          "pop – ünïcode.mp3".encode(): "pop"}
LOW = {b"country.mp3": "country", b"disco.mp3": "disco", b"jazz's.mp3": "jazz"}
SCAN_TIMES = (datetime(2024, 1, 10, 10, 0, tzinfo=timezone.utc), datetime(2024, 3, 5, 21, 30, tzinfo=timezone.utc))


@dataclass
class ReportLibrary:
    settings: config.Settings
    root: Path
    scan_ids: list[int]
    tagged: list[str]  # display paths (as the database holds them: invalid bytes replaced)
    low: list[str]
    failed: list[str]


def run_scan(settings: config.Settings, roots: list[Path], started: datetime | None = None, **options) -> int:
    """One scan in-process: discover, record (skipping unchanged files), analyse each job, finish."""
    scan.prepare_database(settings)
    scan_id = scan.create(settings, [str(r) for r in roots], scan.ScanOptions(**options))
    found = [f for f in discover.walk([str(r) for r in roots]) if isinstance(f, discover.Found)]
    # failed files are analysed again (--retry-failed): the report's lists must show failing *now*
    ids, skipped = scan.record_files(settings, scan_id, found, force=False, retry_failed=True)
    for aid in ids:
        pipeline.analyse(aid, settings)
    scan.finish(settings, scan_id)
    with session_scope(settings.database_url) as db:
        sc = db.get(s.Scan, scan_id)
        sc.found, sc.skipped, sc.queued = len(found), skipped, len(ids)
        if started is not None:  # move the whole scan into the past, every record it made with it
            shift = started - sc.started_at.replace(tzinfo=timezone.utc)
            sc.started_at, sc.finished_at = started, sc.finished_at + shift + timedelta(seconds=42)
            for a in db.scalars(select(s.Analysis).where(s.Analysis.scan_id == scan_id)):
                a.queued_at, a.started_at, a.finished_at = (a.queued_at + shift, a.started_at and a.started_at + shift,
                                                            a.finished_at and a.finished_at + shift)
                if a.prediction is not None:
                    a.prediction.created_at += shift
            for row in db.scalars(select(s.TagChange).where(s.TagChange.scan_id == scan_id)):
                row.created_at += shift
            for row in db.scalars(select(s.Error).where(s.Error.scan_id == scan_id)):
                row.created_at += shift
    return scan_id


def _display(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def report_library(tmp_path_factory, test_model_dir, gtzan) -> ReportLibrary:
    tmp = tmp_path_factory.mktemp("report")
    settings = config.load({"data_dir": tmp / "data", "model": TEST_MODEL, "model_dirs": [str(test_model_dir)],
                            "workers": 1, "min_confidence": 0.0}, environ={}, config_file=tmp / "none.toml")
    root = tmp / "library"
    first, second = root / "first", root / "second"
    for folder, files in ((first, TAGGED), (second, LOW)):
        folder.mkdir(parents=True)
        for name, genre in files.items():
            clip = sorted((gtzan / genre).glob("*.mp3"))[-1]
            shutil.copyfile(clip, os.path.join(os.fsencode(folder), name))
    audiofiles.zero_byte(first, "zero.mp3")
    audiofiles.text_as_audio(first, "readme.mp3")

    ids = [run_scan(settings, [first], SCAN_TIMES[0], min_confidence=0.0),
           run_scan(settings, [second], SCAN_TIMES[1], min_confidence=1.0),
           run_scan(settings, [root], min_confidence=0.0)]
    return ReportLibrary(
        settings=settings, root=root, scan_ids=ids,
        tagged=[_display(os.path.join(os.fsencode(first), n)) for n in TAGGED],
        low=[_display(os.path.join(os.fsencode(second), n)) for n in LOW],
        failed=[str(first / "readme.mp3"), str(first / "zero.mp3")])
