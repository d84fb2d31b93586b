"""What is recorded about a file, written once: an analysis's start and end, and every change to a file.

An analysis (the job's record) is started (``start``), then ends ``finish`` (a
prediction, the file's stat) or ``record_failure`` (its error; final or retried).

A change to a file's tags is journaled: recorded ``pending`` before the file is
touched (``begin_change``), written under a lock on that record, then marked
``done`` or ``failed`` (``journaled_write``). A scan's write and an undo go
through the same two steps, so every change on record can be undone, and a
write whose record was lost in a crash is recognised, not made twice.
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

from tagger import tags
from tagger.config import Settings
from tagger.db import schema as s
from tagger.db.engine import session_scope
from tagger.errors import TaggerError
from tagger.models.base import Prediction
from tagger.naming import Naming
from tagger.options import ScanOptions

log = logging.getLogger("tagger.record")


# ---------------------------------------------------------------- whose genre it is

def is_users_genre(fields: dict[str, list[str]]) -> bool:
    """Whether a file's genre was set by its user: a genre a player shows (the genre field, or a
    WAV's RIFF INFO genre) and no tagger model beside it."""
    return bool(tags.shown_genre(fields)) and not fields.get("model")


def our_genre(fields: dict[str, list[str]], naming: Naming = Naming()) -> Optional[str]:
    """The top genre tagger wrote (``Rock`` of ``Rock; Metal``, several joined into one value), when
    ``fields`` are tagger's (a model beside the genre); else None."""
    if not fields.get("model") or not fields.get("genre"):
        return None
    return naming.top(fields["genre"][0])


# ---------------------------------------------------------------- analyses

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


def start(settings: Settings, analysis_id: int) -> Optional[Job]:
    """Mark an analysis running (one more attempt) and return its job; None when there is nothing
    to do (no such analysis, or a redelivered message of one already finished)."""
    with session_scope(settings.database_url) as db:
        a = db.get(s.Analysis, analysis_id, with_for_update=db.bind.dialect.name != "sqlite")
        if a is None:
            log.warning("analysis %s does not exist; message dropped", analysis_id)
            return None
        if a.status in s.FINISHED:
            return None
        a.status = s.RUNNING
        a.attempts += 1
        a.started_at = s.utcnow()
        a.worker = f"{socket.gethostname()}:{os.getpid()}"
        f = a.file
        return Job(analysis_id=a.id, scan_id=a.scan_id, file_id=f.id,
                   path=settings.map_path(os.fsdecode(f.raw_path)), format=f.format, size=a.size,
                   mtime_ns=a.mtime_ns, options=ScanOptions.from_record(a.scan.options))


def finish(settings: Settings, job: Job, status: str, p: Prediction, before: Optional[dict],
           started: float) -> None:
    """End an analysis that succeeded: its status, its prediction, the file's stat as it now is."""
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
            model_version=p.version, decided_by=p.decided_by, reason=p.reason,
            previous_genre=tags.shown_genre(before or {}),
        ))
        f = db.get(s.File, job.file_id)
        f.size, f.mtime_ns = size, mtime_ns
        if not job.options.dry_run:
            f.done_size, f.done_mtime_ns, f.done_model = size, mtime_ns, p.model
        if status == s.TAGGED:
            f.genre, f.confidence = p.genre, p.confidence


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


# ---------------------------------------------------------------- changes to files

def begin_change(settings: Settings, *, file_id: int, scan_id: Optional[int], action: s.ChangeAction,
                 before: dict, after: dict, analysis_id: Optional[int] = None,
                 reverts_id: Optional[int] = None) -> tuple[int, dict]:
    """Record a change ``pending``, before the file is touched; returns (its id, its ``before``).

    A scan's write (``analysis_id`` given) is recorded once per analysis: a redelivered job
    reuses the change its first attempt recorded, whose ``before`` is the file's true previous
    state, whatever the file holds now.
    """
    def new() -> tuple[int, dict]:
        with session_scope(settings.database_url) as db:
            change = None
            if analysis_id is not None:
                change = db.scalars(query).first()
            if change is None:
                change = s.TagChange(file_id=file_id, scan_id=scan_id, analysis_id=analysis_id, action=action,
                                     before=before, after=after, state=s.ChangeState.PENDING,
                                     reverts_id=reverts_id)
                db.add(change)
                db.flush()
            return change.id, dict(change.before)

    query = select(s.TagChange).where(s.TagChange.analysis_id == analysis_id, s.TagChange.action == action)
    settle_pending(settings, file_id, before, keep=analysis_id)
    try:
        return new()
    except IntegrityError:  # a twin of this job recorded it a moment ago
        with session_scope(settings.database_url) as db:
            change = db.scalars(query).one()
            return change.id, dict(change.before)


def settle_pending(settings: Settings, file_id: int, current: dict, keep: Optional[int] = None) -> int:
    """Settle the file's changes left ``pending`` by a write whose end was never recorded (the
    process killed, or the database gone, between the file's replacement and the record), now
    that ``current`` (its fields as they are) shows what happened: a change whose ``after`` the
    file holds was made (done: undo can restore its ``before``); one whose ``before`` it holds
    was not (failed). A change whose analysis is still queued or running is its worker's to
    finish, as is analysis ``keep``'s; an undo's only once it is older than a job may run.
    Returns how many were settled."""
    from datetime import timedelta

    settled = 0
    old = s.utcnow() - timedelta(seconds=settings.job_time_limit)
    with session_scope(settings.database_url) as db:
        rows = db.execute(select(s.TagChange, s.Analysis.status)
                          .outerjoin(s.Analysis, s.TagChange.analysis_id == s.Analysis.id)
                          .where(s.TagChange.file_id == file_id, s.TagChange.state == s.ChangeState.PENDING)).all()
        for change, status in rows:
            if keep is not None and change.analysis_id == keep:
                continue
            if change.analysis_id is not None and status not in s.FINISHED:
                continue
            created = change.created_at if change.created_at.tzinfo else change.created_at.replace(tzinfo=old.tzinfo)
            if change.analysis_id is None and created > old:
                continue
            if tags.holds(current, change.after):
                change.state = s.ChangeState.DONE
            elif tags.holds(current, change.before):
                change.state = s.ChangeState.FAILED
            else:
                continue
            settled += 1
    if settled:
        log.info("file %s: %d change(s) left pending by an interrupted write settled", file_id, settled)
    return settled


def journaled_write(settings: Settings, change_id: int, path: str, fmt: str, expect: tags.FileStat) -> bool:
    """Make the file hold the change's ``after``, under a lock on the change's record, and mark it
    ``done`` (or ``failed``, the file as it was, the TaggerError raised on). Returns whether the
    file was written.

    At-least-once delivery can run one job in two workers at the same time (a worker wrongly
    taken for dead). The lock (a row lock on PostgreSQL, the write lock on SQLite) is held
    across read, write and record: the second finds the change done and the file holding it,
    and writes nothing. A file that already holds the values (a redelivery after a write whose
    record was lost) is not written again. The file's recorded stat follows the write, so a
    later scan does not take our own change for the user's.
    """
    with session_scope(settings.database_url) as db:
        # a no-op UPDATE takes the lock before anything is read
        db.execute(update(s.TagChange).where(s.TagChange.id == change_id).values(state=s.TagChange.state))
        change = db.get(s.TagChange, change_id, populate_existing=True)
        wanted = dict(change.after)
        current = tags.read(path, fmt)
        if change.state == s.ChangeState.DONE and tags.holds(current, wanted):
            return False  # its twin wrote it
        written = None
        try:
            if not tags.holds(current, wanted):
                written = tags.write(path, fmt, wanted, expect=expect)
        except TaggerError:
            change.state = s.ChangeState.FAILED  # the file is as it was
            db.commit()
            raise
        change.state = s.ChangeState.DONE
        if written is not None and written.changed:
            f = db.get(s.File, change.file_id)
            f.size, f.mtime_ns = written.stat.size, written.stat.mtime_ns
            if f.done_size is not None:
                f.done_size, f.done_mtime_ns = written.stat.size, written.stat.mtime_ns
        return written is not None and written.changed
