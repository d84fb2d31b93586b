"""analyse() on real files, in this process: what ends up in the file and in the database."""
from __future__ import annotations

import os
from dataclasses import replace

import audiofiles
import mutagen
import numpy as np
import pytest
from sqlalchemy import func, select

from tagger import discover, pipeline, scan, tags
from tagger.db import schema as s
from tagger.db.engine import session_scope
from tagger.naming import DISPLAY
from tagger.options import Hearing

USER_TAGS = {"title": ["Sång för ögat"], "artist": ["Ünïcode Ärtist"], "album": ["Album"]}


def _queue(settings, paths, **options):
    """Record a scan of ``paths`` and its analyses (no broker: the test runs the jobs)."""
    scan.prepare_database(settings)
    scan_id = scan.create(settings, [str(p) for p in paths], scan.ScanOptions(**options))
    found = [f for f in discover.walk(paths) if isinstance(f, discover.Found)]
    ids, _ = scan.record_files(settings, scan_id, found, force=True)
    return scan_id, ids


def _analysis(settings, analysis_id):
    with session_scope(settings.database_url) as db:
        a = db.get(s.Analysis, analysis_id)
        return a.status, a.error, a.prediction and (a.prediction.genre, a.prediction.confidence, a.prediction.top)


@pytest.mark.parametrize("fmt", audiofiles.FORMATS)
def test_tags_every_format_keeping_audio_and_other_tags(settings, audio_factory, fmt):
    cover = audiofiles.make_png()
    path = audio_factory(fmt, seconds=12, tags=USER_TAGS, cover=cover)
    before_tags = audiofiles.all_tags(path, fmt)
    before_audio = audiofiles.decode(path, fmt)

    _, (aid,) = _queue(settings, [path], min_confidence=0.0)
    assert pipeline.analyse(aid, settings) == s.TAGGED

    status, error, (genre, confidence, top) = _analysis(settings, aid)
    assert error is None and len(top) == 3 and top[0][0] == genre
    easy = mutagen.File(path, easy=fmt != "m4a" or None)
    ours = tags.read(path, fmt)
    assert ours["genre"] == [DISPLAY[genre]]  # written as players spell it (tagger.naming)
    assert ours["model"] == ["test-logreg 1"]
    assert float(ours["confidence"][0]) == pytest.approx(confidence, abs=1e-3)
    after_tags = audiofiles.all_tags(path, fmt)
    mine = {k for k in after_tags if k not in before_tags or after_tags[k] != before_tags[k]}
    # only our three fields differ
    assert len(mine) <= 3, mine
    assert audiofiles.cover_of(path, fmt) == cover
    np.testing.assert_array_equal(audiofiles.decode(path, fmt), before_audio)
    assert easy is not None


def test_redelivered_job_does_nothing_twice(settings, audio_factory):
    path = audio_factory("flac", seconds=10)
    _, (aid,) = _queue(settings, [path], min_confidence=0.0)
    assert pipeline.analyse(aid, settings) == s.TAGGED
    stat = os.stat(path)
    assert pipeline.analyse(aid, settings) is None  # the same message delivered again
    assert os.stat(path).st_mtime_ns == stat.st_mtime_ns
    with session_scope(settings.database_url) as db:
        assert db.scalar(select(func.count()).select_from(s.Prediction)) == 1
        assert db.scalar(select(func.count()).select_from(s.TagChange)) == 1


def test_redelivery_after_a_crash_between_write_and_record(settings, audio_factory):
    """The tag was written but the worker died before recording it: no second write."""
    path = audio_factory("mp3", seconds=10)
    _, (aid,) = _queue(settings, [path], min_confidence=0.0)
    assert pipeline.analyse(aid, settings) == s.TAGGED
    with session_scope(settings.database_url) as db:  # roll the records back to "mid-job"
        a = db.get(s.Analysis, aid)
        db.delete(a.prediction)
        a.status = s.RUNNING
        change = db.scalars(select(s.TagChange)).one()
        change.state = "pending"
        original_before = dict(change.before)
    mtime = os.stat(path).st_mtime_ns
    assert pipeline.analyse(aid, settings) == s.TAGGED
    assert os.stat(path).st_mtime_ns == mtime  # not written again
    with session_scope(settings.database_url) as db:
        changes = db.scalars(select(s.TagChange)).all()
        assert len(changes) == 1 and changes[0].state == "done" and changes[0].before == original_before


def test_dry_run_writes_nothing(settings, audio_factory):
    path = audio_factory("ogg", seconds=10, tags=USER_TAGS)
    raw = path.read_bytes()
    _, (aid,) = _queue(settings, [path], dry_run=True, min_confidence=0.0)
    assert pipeline.analyse(aid, settings) == s.DRY_RUN
    assert path.read_bytes() == raw
    assert _analysis(settings, aid)[2] is not None  # the prediction is recorded


def test_below_min_confidence_no_tag(settings, audio_factory):
    path = audio_factory("m4a", seconds=10)
    raw = path.read_bytes()
    _, (aid,) = _queue(settings, [path], min_confidence=1.0)
    assert pipeline.analyse(aid, settings) == s.LOW_CONFIDENCE
    assert path.read_bytes() == raw


def test_user_genre_kept_unless_overwrite(settings, audio_factory, tmp_path):
    path = audio_factory("flac", seconds=10, tags={"genre": ["Shoegaze"]})
    _, (aid,) = _queue(settings, [path], min_confidence=0.0)
    assert pipeline.analyse(aid, settings) == s.KEPT
    assert tags.read(path, "flac")["genre"] == ["Shoegaze"]
    with session_scope(settings.database_url) as db:
        assert db.get(s.Analysis, aid).prediction.previous_genre == ["Shoegaze"]

    _, (aid2,) = _queue(settings, [path], min_confidence=0.0, overwrite=True)
    assert pipeline.analyse(aid2, settings) == s.TAGGED
    assert tags.read(path, "flac")["genre"] != ["Shoegaze"]
    with session_scope(settings.database_url) as db:
        change = db.scalars(select(s.TagChange).where(s.TagChange.analysis_id == aid2)).one()
        assert change.before["genre"] == ["Shoegaze"]


@pytest.mark.parametrize("make, reason", [
    (lambda d, f: audiofiles.zero_byte(d, "empty.mp3"), "empty file"),
    (lambda d, f: audiofiles.text_as_audio(d, "notes.mp3"), "not MP3 audio"),
    (lambda d, f: audiofiles.truncated(f("mp3", seconds=20), d / "cut.mp3", 0.05), "truncated"),
    (lambda d, f: f("wav", name="short.wav", seconds=1.5), "too short"),
    (lambda d, f: f("flac", name="silence.flac", seconds=10, kind="silence"), "silent"),
])
def test_bad_input_is_recorded_with_a_reason(settings, audio_factory, tmp_path, make, reason):
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    path = make(bad_dir, audio_factory)
    raw = path.read_bytes()
    _, (aid,) = _queue(settings, [path])
    assert pipeline.analyse(aid, settings) == s.FAILED
    status, error, prediction = _analysis(settings, aid)
    assert reason in error and "\n" not in error and prediction is None
    assert path.read_bytes() == raw


def test_file_deleted_between_scan_and_job(settings, audio_factory):
    path = audio_factory("mp3", seconds=10)
    _, (aid,) = _queue(settings, [path])
    path.unlink()
    assert pipeline.analyse(aid, settings) == s.FAILED
    assert "no longer exists" in _analysis(settings, aid)[1]


def test_file_changed_between_scan_and_write_is_not_written(settings, audio_factory):
    path = audio_factory("flac", seconds=10)
    _, (aid,) = _queue(settings, [path], min_confidence=0.0)
    with open(path, "ab") as f:  # another program touches the file after the scan saw it
        f.write(b"")
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 5_000_000_000))
    raw = path.read_bytes()
    assert pipeline.analyse(aid, settings) == s.FAILED
    assert path.read_bytes() == raw
    with session_scope(settings.database_url) as db:
        assert db.get(s.Analysis, aid).error_kind == "file_changed"
        assert db.scalars(select(s.TagChange)).one().state == "failed"


def test_fallback_decides_when_primary_model_is_missing(settings, audio_factory):
    path = audio_factory("wav", seconds=10)
    chained = replace(settings, model="no-such-model,test-logreg")
    _, (aid,) = _queue(chained, [path], min_confidence=0.0, model="no-such-model,test-logreg")
    assert pipeline.analyse(aid, chained) == s.TAGGED
    with session_scope(settings.database_url) as db:
        p = db.get(s.Analysis, aid).prediction
        assert p.model == "test-logreg" and p.decided_by == "fallback"


def test_worker_that_cannot_see_the_library_says_so(settings, audio_factory, tmp_path):
    path = audio_factory("flac", name="scanner/lib/a.flac", seconds=10)
    _, (aid,) = _queue(settings, [path], min_confidence=0.0)
    (tmp_path / "scanner").rename(tmp_path / "worker-mount")  # the folder is elsewhere for this worker
    assert pipeline.analyse(aid, settings) == s.FAILED
    assert "path_map" in _analysis(settings, aid)[1]

    mapped = replace(settings, path_map=((str(tmp_path / "scanner"), str(tmp_path / "worker-mount")),))
    with session_scope(settings.database_url) as db:  # run the same analysis again, on a mapped worker
        a = db.get(s.Analysis, aid)
        a.status, a.error = s.QUEUED, None
    assert pipeline.analyse(aid, mapped) == s.TAGGED
    assert tags.read(tmp_path / "worker-mount" / "lib" / "a.flac", "flac")["genre"]


def test_file_without_read_permission(settings, audio_factory, tmp_path):
    """Run as an unprivileged user (root reads everything), in a child process."""
    import multiprocessing
    import pwd

    path = audio_factory("mp3", name="perm/locked.mp3", seconds=10)
    _, (aid,) = _queue(settings, [path])
    path.chmod(0o200)  # write-only: the owner cannot read it
    if os.geteuid() == 0:
        for root, dirs, files in os.walk(tmp_path):  # the child must reach the database
            for name in dirs + files:
                os.chmod(os.path.join(root, name), 0o777 if name in dirs else 0o666)
        os.chmod(tmp_path, 0o777)
        for parent in (tmp_path.parent, tmp_path.parent.parent):  # pytest's base folders are private
            os.chmod(parent, os.stat(parent).st_mode | 0o111)
        path.chmod(0o200)
        nobody = pwd.getpwnam("nobody")
        ctx = multiprocessing.get_context("fork")
        child = ctx.Process(target=_analyse_as, args=(aid, settings, nobody.pw_uid, nobody.pw_gid))
        child.start()
        child.join(120)
        assert child.exitcode == 0
    else:
        pipeline.analyse(aid, settings)
    status, error, prediction = _analysis(settings, aid)
    assert status == s.FAILED and "permission denied" in error and prediction is None


def _analyse_as(analysis_id, settings, uid, gid):
    from tagger.db import engine as engine_mod

    engine_mod._engines.clear()  # no connection inherited from the parent
    os.setgid(gid)
    os.setuid(uid)
    pipeline.analyse(analysis_id, settings)


def test_windows_option_sets_what_the_model_hears(settings, audio_factory, monkeypatch):
    # the scan's option reaches the decoder: the real reader runs, its windows are counted
    path = audio_factory("flac", name="w.flac", seconds=60)
    seen = []
    real = pipeline.audio.Reader.read

    def spy(self, starts):
        clip = real(self, starts)
        seen.append(len(clip.windows))
        return clip

    monkeypatch.setattr(pipeline.audio.Reader, "read", spy)
    tops = {}
    for n in (1, 3, 10):
        _, (aid,) = _queue(settings, [path], dry_run=True, hearing=Hearing(windows=n, first=0))
        assert pipeline.analyse(aid, settings) == s.DRY_RUN
        tops[n] = _analysis(settings, aid)[2]
    assert seen == [1, 3, 10]  # the test model (MFCC statistics) hears every window at once
    assert tops[1] != tops[10]  # the model saw different audio


def test_the_log_line_says_where_an_analysis_spent_its_time(settings, audio_factory, caplog):
    path = audio_factory("mp3", seconds=12)
    _, (aid,) = _queue(settings, [path], min_confidence=0.0)
    with caplog.at_level("INFO", logger="tagger.pipeline"):
        assert pipeline.analyse(aid, settings) == s.TAGGED
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("tagged ")]
    total = float(line.split(" in ")[1].split("s (")[0])
    stages = dict(part.split(" ") for part in line.split("s (")[1].rstrip(")").split(", "))
    assert set(stages) == {"decode", "features", "model", "tags", "db", "other"}, line
    spent = {k: float(v) for k, v in stages.items()}
    assert all(v >= 0 for v in spent.values())
    assert spent["decode"] > 0 and spent["tags"] > 0 and spent["db"] > 0
    # the stages are the whole analysis, each second counted once (rounding: 0.01 per stage)
    assert abs(sum(spent.values()) - total) <= 0.02 * len(spent) + 0.02, line


def test_a_scan_says_how_many_files_it_queues_when_its_workers_start(settings, audio_factory, tmp_path, monkeypatch):
    """The local workers start with the first jobs; they are told the scan's size when discovery
    has ended by then (runtime = auto runs a small scan's workers in LiteRT), else None."""
    from tagger import queue

    lib = tmp_path / "lib"
    for i in range(5):
        audio_factory("wav", name=f"lib/{i}.wav", seconds=4)
    scan.prepare_database(settings)
    queue.configure(settings)
    told = []
    scan_id = scan.create(settings, [str(lib)], scan.ScanOptions())
    assert scan.discover_and_queue(settings, scan_id, [str(lib)], True, on_first_job=told.append)[2] == 5
    assert told == [5]
    monkeypatch.setattr(scan, "BATCH", 2)  # the first jobs are queued while discovery still walks

    def told_when(**how):
        told.clear()
        scan_id = scan.create(settings, [str(lib)], scan.ScanOptions())
        scan.discover_and_queue(settings, scan_id, [str(lib)], True, on_first_job=told.append, **how)
        return told

    assert told_when() == [None]  # at once, the size not known
    # workers that run a small scan otherwise wait for discovery to end, to learn its size
    assert told_when(size_up_to=60) == [5]
    assert told_when(size_up_to=3) == [None]  # 4 queued by the second batch: more than 3, start then
    monkeypatch.setattr(scan, "SIZE_WAIT_S", 0.0)  # discovery slower than the wait: start, size unknown
    assert told_when(size_up_to=60) == [None]
    queue.clear()



def test_auto_runs_onnx_for_small_scans_and_everywhere_on_a_cpu_without_avx512(settings, monkeypatch):
    """runtime = auto: where the CPU has AVX-512 (Keras the faster per window), ONNX Runtime for a scan
    of at most LIGHT_FILES_PER_WORKER files per worker, whose workers wait to learn its size;
    without AVX-512 (the light runtimes the faster), ONNX Runtime for every scan and in every
    process, no wait."""
    import dataclasses

    from tagger.models import runtime
    from tagger.workers.processes import LIGHT_FILES_PER_WORKER, runtime_for, waits_for_size

    limit = LIGHT_FILES_PER_WORKER * 2
    old = runtime._runtime
    try:
        monkeypatch.setattr(runtime, "cpu_has_avx512", lambda: True)
        assert [runtime_for("auto", n, 2) for n in (1, limit, limit + 1, None)] == ["onnx", "onnx", "keras", "keras"]
        assert waits_for_size(settings, 2) == limit
        runtime.set_runtime("auto")
        assert not runtime.wants_litert() and not runtime.wants_onnx()  # a worker or server that lives on
        monkeypatch.setattr(runtime, "cpu_has_avx512", lambda: False)
        assert [runtime_for("auto", n, 2) for n in (1, limit, limit + 1, None)] == ["onnx"] * 4
        assert waits_for_size(settings, 2) == 0
        assert runtime.wants_onnx() and runtime.wants_litert()  # LiteRT where ONNX Runtime cannot run
        for cpu in (True, False):
            monkeypatch.setattr(runtime, "cpu_has_avx512", lambda: cpu)
            assert runtime_for("keras", 1, 2) == "keras" and runtime_for("litert", None, 2) == "litert"
            runtime.set_runtime("keras")
            assert not runtime.wants_litert() and not runtime.wants_onnx()
            assert waits_for_size(dataclasses.replace(settings, runtime="keras"), 2) == 0
    finally:
        runtime.set_runtime(old)
