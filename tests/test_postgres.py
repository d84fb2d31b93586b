"""PostgreSQL as the results database, written by many processes at once.

No broker here: worker processes call ``pipeline.analyse`` directly, each on
every analysis of a scan in its own order, so the same job is run by several
processes at the same moment (what at-least-once delivery allows when a slow
worker is taken for dead). Each file must still end up with one prediction,
one tag change and its audio intact, with no deadlock and no lost row.
"""
from __future__ import annotations

import multiprocessing
import random
from dataclasses import replace

import pytest

from services import run_cli
from sqlalchemy import func, select

from tagger import discover, pipeline, scan, tags
from tagger.db import schema as s
from tagger.db.engine import session_scope
from tagger.naming import DISPLAY

FORMATS = ("mp3", "flac", "ogg", "m4a")


def _analyse_all(settings, analysis_ids: list[int], seed: int) -> list[tuple[int, str | None, str]]:
    """Run every analysis in a shuffled order; returns (id, status or None, error) per call."""
    order = list(analysis_ids)
    random.Random(seed).shuffle(order)
    out = []
    for aid in order:
        try:
            out.append((aid, pipeline.analyse(aid, settings), ""))
        except Exception as exc:  # a transient error would be retried by the queue
            out.append((aid, None, f"{type(exc).__name__}: {exc}"))
    return out


@pytest.mark.slow
def test_concurrent_writers_do_each_file_once(settings, pg_url, audio_factory):
    pg = replace(settings, db_url=pg_url)
    assert run_cli(pg, "db", "upgrade").returncode == 0
    paths = [audio_factory(FORMATS[i % 4], name=f"lib/{i:02d}.{FORMATS[i % 4]}", seconds=10) for i in range(6)]
    before = {p: tags.audio_fingerprint(p, p.suffix[1:]) for p in paths}
    scan_id = scan.create(pg, [str(paths[0].parent)], scan.ScanOptions(min_confidence=0.0))
    found = [f for f in discover.walk([paths[0].parent]) if isinstance(f, discover.Found)]
    ids, _ = scan.record_files(pg, scan_id, found, force=False)
    assert len(ids) == len(paths)

    ctx = multiprocessing.get_context("spawn")  # a clean interpreter per worker, as `tagger worker` has
    with ctx.Pool(3) as pool:
        runs = pool.starmap(_analyse_all, [(pg, ids, seed) for seed in range(3)], chunksize=1)

    calls = [c for run in runs for c in run]
    assert len(calls) == 3 * len(ids)
    assert not [c for c in calls if c[2] and "deadlock" in c[2].lower()], calls
    with session_scope(pg.database_url) as db:
        rows = db.scalars(select(s.Analysis).where(s.Analysis.scan_id == scan_id)).all()
        assert sorted(a.status for a in rows) == [s.TAGGED] * len(paths), [(a.status, a.error) for a in rows]
        for table in (s.Prediction, s.TagChange):
            per = dict(db.execute(select(table.analysis_id, func.count()).group_by(table.analysis_id)).all())
            assert per == {aid: 1 for aid in ids}, table.__name__
        assert db.scalar(select(func.count()).select_from(s.TagChange).where(s.TagChange.state != "done")) == 0
        assert db.scalar(select(func.count()).select_from(s.Error)) == 0
        genres = {a.file.path: a.prediction.genre for a in rows}
        recorded = {a.file.path: (a.file.done_size, a.file.done_mtime_ns) for a in rows}
    # a call that starts while another runs the same job redoes the analysis (the job's row says
    # running, and its worker may be dead), but finds the tag written and writes nothing
    assert {aid for aid, status, _ in calls if status == s.TAGGED} == set(ids)
    for p in paths:
        assert tags.read(p, p.suffix[1:])["genre"] == [DISPLAY[genres[str(p)]]]
        assert tags.audio_fingerprint(p, p.suffix[1:]) == before[p]
        # no write after the recorded one: the next scan sees the file unchanged
        st = p.stat()
        assert recorded[str(p)] == (st.st_size, st.st_mtime_ns), p
