"""analyse(): the one function a job runs, for one file of one scan.

decode → features → predict → write tags → record. The database row of the
analysis is the job's state, which makes a redelivered message harmless: a
finished analysis is not done again, and a tag write that happened before a
crash is recognised instead of repeated.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Optional

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from tagger import audio, formats, tags
from tagger.config import Settings
from tagger.db import schema as s
from tagger.db.engine import session_scope
from tagger.errors import FileMissing, TaggerError, TransientError, UnsupportedFormat, is_transient
from tagger.models.base import Prediction
from tagger.models.predictor import Predictor
from tagger.options import ScanOptions

log = logging.getLogger("tagger.pipeline")

_predictors: dict[tuple[str, tuple[str, ...]], Predictor] = {}


def predictor_for(model: str, model_dirs: tuple[str, ...]) -> Predictor:
    key = (model, model_dirs)
    if key not in _predictors:
        _predictors[key] = Predictor.from_settings(model, model_dirs)
    return _predictors[key]


@dataclass(frozen=True)
class Job:
    """What a job needs to know, read from the database at its start."""

    analysis_id: int
    scan_id: int
    file_id: int
    path: str
    format: str
    size: int
    mtime_ns: int
    options: ScanOptions


def analyse(analysis_id: int, settings: Settings) -> Optional[str]:
    """Analyse one queued file; returns the analysis's final status (None: already done).

    Permanent problems with the file are recorded as a failed analysis and do
    not raise. Transient ones raise TransientError, for the queue to retry.
    """
    job = _start(analysis_id, settings)
    if job is None:
        return None
    started = time.monotonic()
    try:
        status, prediction, written = _run(job, settings)
    except TaggerError as exc:
        if not exc.permanent:
            raise
        _finish_failed(settings, job, exc.kind, exc.message, started)
        log.info("failed %s: %s", job.path, exc.message)
        return s.FAILED
    except Exception as exc:
        if is_transient(exc):
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        # a defect, not the file's fault; record it rather than retry it forever
        _finish_failed(settings, job, "internal", f"internal error: {type(exc).__name__}: {exc}", started)
        log.exception("internal error on %s", job.path)
        return s.FAILED
    _finish_ok(settings, job, status, prediction, written, started)
    log.info("%s %s: %s (%.2f, %s) in %.2fs", status, job.path, prediction.genre,
             prediction.confidence, prediction.model, time.monotonic() - started)
    return status


def _start(analysis_id: int, settings: Settings) -> Optional[Job]:
    with session_scope(settings.database_url) as db:
        a = db.get(s.Analysis, analysis_id, with_for_update=db.bind.dialect.name != "sqlite")
        if a is None:
            log.warning("analysis %s does not exist; message dropped", analysis_id)
            return None
        if a.status in s.FINISHED:
            return None  # a redelivered message: the work is done
        a.status = s.RUNNING
        a.attempts += 1
        a.started_at = s.utcnow()
        a.worker = f"{socket.gethostname()}:{os.getpid()}"
        f = a.file
        return Job(
            analysis_id=a.id,
            scan_id=a.scan_id,
            file_id=f.id,
            path=settings.map_path(os.fsdecode(f.raw_path)),
            format=f.format,
            size=a.size,
            mtime_ns=a.mtime_ns,
            options=ScanOptions.from_record(a.scan.options),
        )


def predict_path(path: str, settings: Settings, model: str = "") -> tuple[Prediction, audio.Clip]:
    """Predict one file's genre as a job would, recording and writing nothing (scripts, benchmarks,
    tests that compare other routes with a scan's).

    Raises the same one-line TaggerErrors a job records (missing, unsupported, unreadable, ...).
    """
    fmt = check_file(path)
    prediction, heard = predictor_for(model or settings.model, settings.model_dirs).hear(path, fmt, settings.hearing)
    return prediction, heard.clip


def check_file(path: str, path_map: bool = False) -> str:
    """The format of the file a job is about to hear; raises a one-line TaggerError when there
    is nothing to hear (gone, a folder, empty, unreadable, content not of its name's format).
    ``path_map``: the worker maps the scanner's paths (a missing file may be a missing mount)."""
    if not os.path.lexists(path):
        if path_map or not os.path.isdir(os.path.dirname(path)):
            # a worker on another machine that does not see the scanner's folders
            raise FileMissing(f"file not found on this worker ({socket.gethostname()}): is the library "
                              "mounted at the same path here, or is path_map set?")
        raise FileMissing("file no longer exists (deleted or moved since the scan)")
    if os.path.isdir(path):
        raise UnsupportedFormat("a folder, not a file")
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise FileMissing(f"cannot read file: {exc.strerror or exc}") from None
    if size == 0:
        raise UnsupportedFormat("empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise FileMissing("cannot read file: permission denied")
    return formats.confirm(path)  # the content must agree with the name


def _run(job: Job, settings: Settings) -> tuple[str, Prediction, Optional[dict]]:
    fmt = check_file(job.path, bool(settings.path_map))
    opts = job.options
    predictor = predictor_for(opts.model or settings.model, settings.model_dirs)
    prediction, heard = predictor.hear(job.path, fmt, opts.hearing)
    log.debug("%s: heard %d of %d windows", job.path, heard.windows, heard.planned)

    current = tags.read(job.path, fmt)
    if opts.dry_run:
        return s.DRY_RUN, prediction, {"before": current, "after": None}
    if prediction.confidence < opts.min_confidence:
        return s.LOW_CONFIDENCE, prediction, {"before": current, "after": None}
    if current.get("genre") and not current.get("model") and not opts.overwrite:
        return s.KEPT, prediction, {"before": current, "after": None}  # the user's own genre

    wanted = {
        "genre": list(prediction.genres or [prediction.genre]),
        "confidence": [f"{prediction.confidence:.3f}"],
        "model": [f"{prediction.model} {prediction.version}"],
    }
    change_id, before = _record_pending_change(settings, job, current, wanted)
    _write_once(settings, job, fmt, change_id, wanted)
    return s.TAGGED, prediction, {"before": before, "after": wanted}


def _write_once(settings: Settings, job: Job, fmt: str, change_id: int, wanted: dict) -> None:
    """Write the file under a lock on its change record, so twins of one job write once.

    At-least-once delivery can run one job in two workers at the same time (a
    worker wrongly taken for dead). The lock (a row lock on PostgreSQL, the
    write lock on SQLite) is held across read, write and record: the second
    worker finds the change done and the file holding it, and writes nothing.
    """
    with session_scope(settings.database_url) as db:
        # a no-op UPDATE takes the lock before anything is read
        db.execute(update(s.TagChange).where(s.TagChange.id == change_id).values(state=s.TagChange.state))
        change = db.get(s.TagChange, change_id, populate_existing=True)
        current = tags.read(job.path, fmt)
        if change.state == "done" and current == wanted:
            return  # its twin wrote it
        try:
            if current != wanted:
                tags.write(job.path, fmt, wanted, expect=tags.FileStat(job.size, job.mtime_ns))
            # else: a redelivery after a write whose record was lost: the file already holds it
        except TaggerError:
            change.state = "failed"  # the file is as it was
            db.commit()
            raise
        change.state = "done"


def _record_pending_change(settings: Settings, job: Job, current: dict, wanted: dict) -> tuple[int, dict]:
    """Record the values before the write, before the file is touched.

    On a redelivery, the change recorded by the first attempt is reused: its
    ``before`` is the file's true previous state, whatever the file holds now.
    """
    query = select(s.TagChange).where(s.TagChange.analysis_id == job.analysis_id, s.TagChange.action == "write")
    try:
        with session_scope(settings.database_url) as db:
            change = db.scalars(query).first()
            if change is None:
                change = s.TagChange(file_id=job.file_id, scan_id=job.scan_id, analysis_id=job.analysis_id,
                                     action="write", before=current, after=wanted, state="pending")
                db.add(change)
                db.flush()
            return change.id, dict(change.before)
    except IntegrityError:  # a twin of this job recorded it a moment ago
        with session_scope(settings.database_url) as db:
            change = db.scalars(query).one()
            return change.id, dict(change.before)


def _finish_ok(settings: Settings, job: Job, status: str, p: Prediction, change: Optional[dict],
               started: float) -> None:
    try:
        st = os.stat(job.path)
        size, mtime_ns = st.st_size, st.st_mtime_ns
    except OSError:
        size, mtime_ns = job.size, job.mtime_ns
    with session_scope(settings.database_url) as db:
        a = db.get(s.Analysis, job.analysis_id)
        if a.status in s.FINISHED:
            return
        a.status = status
        a.finished_at = s.utcnow()
        a.seconds = round(time.monotonic() - started, 4)
        a.error_kind = a.error = None
        db.add(s.Prediction(
            analysis_id=job.analysis_id, file_id=job.file_id, genre=p.genre, genres=list(p.genres),
            confidence=p.confidence, top=[[g, round(q, 6)] for g, q in p.top], model=p.model,
            model_version=p.version, decided_by=p.decided_by,
            previous_genre=list((change or {}).get("before", {}).get("genre", [])),
        ))
        f = db.get(s.File, job.file_id)
        f.size, f.mtime_ns = size, mtime_ns
        if not job.options.dry_run:
            f.done_size, f.done_mtime_ns, f.done_model = size, mtime_ns, p.model
        if status == s.TAGGED:
            f.genre, f.confidence = p.genre, p.confidence


def _finish_failed(settings: Settings, job: Job, kind: str, message: str, started: float) -> None:
    record_failure(settings, job.analysis_id, kind, message, final=True, seconds=time.monotonic() - started)


def record_failure(settings: Settings, analysis_id: int, kind: str, message: str, *, final: bool,
                   seconds: float | None = None) -> None:
    """Record an error of an analysis; ``final`` marks the analysis failed (no retry follows)."""
    with session_scope(settings.database_url) as db:
        a = db.get(s.Analysis, analysis_id)
        if a is None or a.status in s.FINISHED:
            return
        a.error_kind, a.error = kind, message
        if final:
            a.status = s.FAILED
            a.finished_at = s.utcnow()
            a.seconds = None if seconds is None else round(seconds, 4)
        else:
            a.status = s.QUEUED
        db.add(s.Error(scan_id=a.scan_id, file_id=a.file_id, analysis_id=a.id, path=a.file.path,
                       kind=kind, message=message, final=final))
