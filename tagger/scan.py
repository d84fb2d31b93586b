"""A scan: discover files, record them, queue one job each, follow progress.

The database is the source of truth for progress: the broker only carries
the analysis ids.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from tagger import discover, queue
from tagger.config import Settings
from tagger.db import schema as s
from tagger.db.engine import ensure_schema, session_scope
from tagger.options import ScanOptions  # noqa: F401 - part of this module's interface (scan.create)

log = logging.getLogger("tagger.scan")
#: how often a scan following its jobs polls a database server that went away, seconds
DATABASE_RETRY_S = 5.0

BATCH = 500
#: workers that want to know a scan's size (runtime = auto) start at most this long after its first
#: jobs are queued, if discovery is still walking then (an unchanged tree of 10,000 files is walked
#: in 0.8 s; README, Throughput); the model loads for seconds after that anyway
SIZE_WAIT_S = 2.0


@dataclass
class Progress:
    total: int
    done: int
    counts: dict[str, int]
    elapsed: float

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> Optional[float]:
        return (self.total - self.done) / self.rate if self.rate > 0 else None


def prepare_database(settings: Settings) -> None:
    """Bring the database to the latest schema (automatic for SQLite only)."""
    url = settings.database_url
    ensure_schema(url, auto_upgrade=url.startswith("sqlite"))


#: a scan whose following process has not been heard from for this long is dead
STALE_AFTER_S = 120.0
#: how often a following process says it is alive
HEARTBEAT_S = 5.0


def create(settings: Settings, roots: list[str], options: ScanOptions, follows: bool = True) -> int:
    """Record a new scan. ``follows``: this process follows the scan's jobs to the end (it
    records its pid and a heartbeat, so a later scan can tell when it died); a scan queued
    for remote workers and left (``tagger scan`` on Redis without ``--wait``) has no owner.

    Scans found dead first (``reap_dead``) give their unfinished files back.
    """
    reap_dead(settings)
    with session_scope(settings.database_url) as db:
        scan = s.Scan(roots=[os.fsdecode(os.path.abspath(r)) for r in roots], options=options.to_record(),
                      host=socket.gethostname(), status=s.ScanStatus.RUNNING,
                      pid=os.getpid() if follows else None, heartbeat_at=s.utcnow() if follows else None)
        db.add(scan)
        db.flush()
        return scan.id


def heartbeat(settings: Settings, scan_id: int) -> None:
    with session_scope(settings.database_url) as db:
        db.execute(update(s.Scan).where(s.Scan.id == scan_id, s.Scan.pid.is_not(None))
                   .values(heartbeat_at=s.utcnow()))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def reap_dead(settings: Settings, stale_after_s: float = STALE_AFTER_S) -> list[int]:
    """Find running scans whose following process is gone (on this host: its pid no longer
    exists; on another: silent past ``stale_after_s``), mark them interrupted and their
    unfinished analyses failed, so their files are no longer "in flight" and the next scan
    takes them up. Returns the ids of the scans reaped.

    Killed without a chance to clean up (kill -9, the OOM killer, a power cut), a scan stays
    ``running`` and every later scan would skip its unfinished files as another scan's work.
    """
    host = socket.gethostname()
    now = s.utcnow()
    dead = []
    with session_scope(settings.database_url) as db:
        for scan in db.scalars(select(s.Scan).where(s.Scan.status == s.ScanStatus.RUNNING, s.Scan.pid.is_not(None))):
            beat = scan.heartbeat_at or scan.started_at
            if beat is not None and beat.tzinfo is None:  # SQLite hands back naive UTC
                beat = beat.replace(tzinfo=now.tzinfo)
            # on this host the pid says it; from another host only the heartbeat can
            gone = scan.host == host and not _pid_alive(scan.pid)
            silent = scan.host != host and (beat is None or (now - beat).total_seconds() > stale_after_s)
            if gone or silent:
                why = (f"process {scan.pid} on {host} is gone" if gone
                       else f"no sign of life from {scan.host} for {(now - beat).total_seconds():.0f} s")
                dead.append((scan.id, why))
    for scan_id, why in dead:
        fail_unfinished(settings, scan_id, "interrupted",
                        f"the scan stopped without finishing ({why}) before this file was analysed")
        finish(settings, scan_id, s.ScanStatus.INTERRUPTED)
        log.warning("scan %s was dead (%s): marked interrupted, its files are taken up again", scan_id, why)
    return [scan_id for scan_id, _ in dead]


def discover_and_queue(settings: Settings, scan_id: int, roots: Iterable[str], force: bool,
                       on_batch: Optional[Callable[[int, int], None]] = None,
                       on_first_job: Optional[Callable[[Optional[int]], None]] = None,
                       within: Optional[Iterable[str]] = None, clean: bool = True,
                       retry_failed: bool = False, size_up_to: int = 0) -> tuple[int, int, int]:
    """Walk the roots, record files and analyses, queue jobs as each batch commits.

    ``clean``: remove stale temporary copies of killed writes from the folders walked.

    ``within``: folders that symlinks must not lead out of (``discover.walk``).
    ``on_first_job(expected)`` starts the local workers: as the first jobs are queued, with how
    many the scan queues in all when discovery has ended by then, else None. ``size_up_to``: the
    workers would run differently for a scan of at most that many files (runtime = auto), so their
    start waits until discovery ends (``expected``: the count), more are queued, or ``SIZE_WAIT_S``
    pass after the first jobs (None), whichever comes first: an incremental scan of a large tree
    that queues a new album learns its size.
    Returns (found, skipped as unchanged, queued).
    """
    found = skipped = queued = 0
    batch: list[discover.Found] = []
    waiting_since: Optional[float] = None  # jobs queued, the workers' start waiting for the scan's size

    def start(expected: Optional[int]) -> None:
        nonlocal waiting_since
        waiting_since = None
        on_first_job(expected)

    def flush(last: bool = False) -> None:
        nonlocal skipped, queued, waiting_since
        ids, n_skipped = record_files(settings, scan_id, batch, force, retry_failed)
        skipped += n_skipped
        if ids:
            if queued == 0 and on_first_job:
                waiting_since = time.monotonic()  # with size_up_to 0 they start below, at once
            queue.enqueue(ids)
            queued += len(ids)
        if waiting_since is not None and (last or queued > size_up_to):
            start(queued if last else None)
        batch.clear()
        heartbeat(settings, scan_id)  # discovery of a large tree is part of the scan's life
        if on_batch:
            on_batch(found, queued)

    for item in discover.walk(roots, within, clean=clean):
        if waiting_since is not None and time.monotonic() - waiting_since > SIZE_WAIT_S:
            start(None)
        if isinstance(item, discover.Problem):
            _record_problem(settings, scan_id, item)
            continue
        found += 1
        batch.append(item)
        if len(batch) >= BATCH:
            flush()
    flush(last=True)
    with session_scope(settings.database_url) as db:
        scan = db.get(s.Scan, scan_id)
        scan.found, scan.skipped, scan.queued = found, skipped, queued
    return found, skipped, queued


def record_files(settings: Settings, scan_id: int, batch: list[discover.Found], force: bool,
                 retry_failed: bool = False) -> tuple[list[int], int]:
    """Record the batch's files and an analysis for each that needs one; returns (analysis ids,
    files skipped). Skipped, unless ``force``: files another running scan has in flight, files
    unchanged since their last analysis, and (unless ``retry_failed``) unchanged files whose last
    analysis failed for a fault of the file's own (``PERMANENT_KINDS``): it would fail again."""
    if not batch:
        return [], 0
    try:
        return _record_files(settings, scan_id, batch, force, retry_failed)
    except IntegrityError:
        # another scan of the same folder inserted some of these files between our look and our
        # insert (two scans started together): look again, now that its rows are there
        return _record_files(settings, scan_id, batch, force, retry_failed)


def _record_files(settings: Settings, scan_id: int, batch: list[discover.Found], force: bool,
                  retry_failed: bool) -> tuple[list[int], int]:
    raws = {os.fsencode(f.path): f for f in batch}
    ids: list[int] = []
    skipped = 0
    with session_scope(settings.database_url) as db:
        existing = {f.raw_path: f for f in db.scalars(select(s.File).where(s.File.raw_path.in_(list(raws))))}
        # files another running scan has queued and not finished: queuing them again would duplicate work
        in_flight = set() if force or not existing else set(db.scalars(
            select(s.Analysis.file_id).join(s.Scan, s.Analysis.scan_id == s.Scan.id)
            .where(s.Analysis.file_id.in_([f.id for f in existing.values()]),
                   s.Analysis.status.in_([s.QUEUED, s.RUNNING]), s.Scan.status == s.ScanStatus.RUNNING,
                   s.Scan.id != scan_id)))
        failed_before = {} if force or retry_failed or not existing else _failed_before(db, existing.values())
        new_analyses = []
        for raw, found in raws.items():
            row = existing.get(raw)
            if row is None:
                row = s.File(raw_path=raw, path=raw.decode("utf-8", "replace"), format=found.format,
                             size=found.size, mtime_ns=found.mtime_ns)
                db.add(row)
            elif not force and (row.id in in_flight or (
                    row.done_size == found.size and row.done_mtime_ns == found.mtime_ns)
                    or failed_before.get(row.id) == (found.size, found.mtime_ns)):
                skipped += 1
                continue
            row.size, row.mtime_ns, row.format = found.size, found.mtime_ns, found.format
            analysis = s.Analysis(scan_id=scan_id, file=row, size=found.size, mtime_ns=found.mtime_ns)
            db.add(analysis)
            new_analyses.append(analysis)
        db.flush()
        ids = [a.id for a in new_analyses]
    return ids, skipped


#: failures that are the file's own fault: the same bytes fail the same way (a broken stream, a
#: text file named .mp3, ID3 frames tagger cannot keep); a rescan skips them until the file changes.
#: Not tag_write_failed in general: a full disk or a read-only folder is the machine's, not the file's
PERMANENT_KINDS = ("unreadable_audio", "unsupported_format", "unreadable_frames")


def _failed_before(db, files) -> dict[int, tuple[int, int]]:
    """file id -> (size, mtime) as last analysed, for files whose latest analysis failed permanently."""
    ids = [f.id for f in files]
    latest = (select(s.Analysis.file_id, func.max(s.Analysis.id).label("id"))
              .where(s.Analysis.file_id.in_(ids), s.Analysis.status.in_(s.FINISHED))
              .group_by(s.Analysis.file_id).subquery())
    rows = db.execute(select(s.Analysis.file_id, s.Analysis.size, s.Analysis.mtime_ns)
                      .join(latest, s.Analysis.id == latest.c.id)
                      .where(s.Analysis.status == s.FAILED, s.Analysis.error_kind.in_(PERMANENT_KINDS)))
    return {fid: (size, mtime) for fid, size, mtime in rows}


def _record_problem(settings: Settings, scan_id: int, problem: discover.Problem) -> None:
    with session_scope(settings.database_url) as db:
        db.add(s.Error(scan_id=scan_id, path=os.fsencode(problem.path).decode("utf-8", "replace"),
                       kind="unreadable_path", message=problem.reason, final=True))


def requeue(settings: Settings, scan_id: int, include_running: bool = False) -> int:
    """Send the messages of a scan's unfinished analyses again (a broker that lost them).

    Redelivery is harmless: an analysis that finishes first makes its twin a no-op.
    """
    states = [s.QUEUED, s.RUNNING] if include_running else [s.QUEUED]
    with session_scope(settings.database_url) as db:
        ids = list(db.scalars(select(s.Analysis.id).where(s.Analysis.scan_id == scan_id,
                                                          s.Analysis.status.in_(states))))
    return queue.enqueue(ids) if ids else 0


def progress(settings: Settings, scan_id: int, started: float) -> Progress:
    with session_scope(settings.database_url) as db:
        rows = db.execute(
            select(s.Analysis.status, func.count()).where(s.Analysis.scan_id == scan_id).group_by(s.Analysis.status)
        ).all()
    counts = {status: n for status, n in rows}
    total = sum(counts.values())
    done = sum(n for st, n in counts.items() if st in s.FINISHED)
    return Progress(total=total, done=done, counts=counts, elapsed=time.monotonic() - started)


#: below this much free space where the results database lives, a scan stops (writes would fail)
MIN_FREE_BYTES = 64 * 1024


def check_space(settings: Settings) -> None:
    """Raise ``OSError(ENOSPC)`` when the folder of an SQLite results database is (nearly) full.

    Workers whose database writes fail on a full disk retry them as transient, so a scan would
    sit at the same count for minutes saying nothing; the scanner looks instead.
    """
    import errno
    import shutil

    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if not url.drivername.startswith("sqlite") or not url.database:
        return
    folder = Path(url.database).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < MIN_FREE_BYTES:
        raise OSError(errno.ENOSPC, "no space left for the results database", str(folder))


def wait(settings: Settings, scan_id: int, started: float, on_progress: Callable[[Progress], None],
         workers=None, poll: float = 0.5, discovering: Callable[[], bool] = lambda: False) -> Progress:
    """Follow a scan until every analysis has finished (or local workers cannot go on).

    A database server (PostgreSQL) that goes away is waited for: the scan follows its jobs
    again when a poll reaches it (the workers wait for it too, ``WaitForDatabase``)."""
    from tagger.errors import database_error

    beat = time.monotonic()
    server = not settings.database_url.startswith("sqlite")
    away: Optional[float] = None
    while True:
        try:
            p = progress(settings, scan_id, started)
            if time.monotonic() - beat >= HEARTBEAT_S:
                heartbeat(settings, scan_id)
                beat = time.monotonic()
        except Exception as exc:
            if not (server and database_error(exc)):
                raise
            if away is None:
                away = time.monotonic()
                first = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
                log.warning("results database unreachable (%s); waiting for it", first)
            time.sleep(DATABASE_RETRY_S)
            continue
        if away is not None:
            log.warning("results database reachable again after %.0f s; following the scan", time.monotonic() - away)
            away = None
        on_progress(p)
        if p.done >= p.total and not discovering():
            return p
        check_space(settings)
        if workers is not None and not workers.check():
            fail_unfinished(settings, scan_id, "worker", "worker processes stopped unexpectedly; see worker.log")
            return progress(settings, scan_id, started)
        time.sleep(poll)


def fail_unfinished(settings: Settings, scan_id: int, kind: str, reason: str) -> int:
    """End the scan's unfinished analyses; returns how many. ``kind`` "interrupted" (the scan
    stopped first): they are interrupted, not failures, and the next scan takes them up like
    files never analysed. Any other kind (the workers died, an internal error): failed."""
    interrupted = kind == "interrupted"
    with session_scope(settings.database_url) as db:
        rows = db.scalars(select(s.Analysis).where(s.Analysis.scan_id == scan_id,
                                                   s.Analysis.status.in_([s.QUEUED, s.RUNNING]))).all()
        for a in rows:
            a.status = s.INTERRUPTED if interrupted else s.FAILED
            a.error_kind, a.error, a.finished_at = kind, reason, s.utcnow()
            if not interrupted:
                db.add(s.Error(scan_id=scan_id, file_id=a.file_id, analysis_id=a.id, path=a.file.path,
                               kind=kind, message=reason, final=True))
        return len(rows)


def finish(settings: Settings, scan_id: int, status: s.ScanStatus = s.ScanStatus.DONE) -> None:
    """End a running scan with ``status``; a scan already ended (interrupted by a server
    stopping, found dead by another scan) keeps the end it was given."""
    with session_scope(settings.database_url) as db:
        db.execute(update(s.Scan).where(s.Scan.id == scan_id, s.Scan.status == s.ScanStatus.RUNNING)
                   .values(status=status, finished_at=s.utcnow()))


def _others_running(settings: Settings, scan_id: int) -> bool:
    with session_scope(settings.database_url) as db:
        return db.scalar(select(func.count()).select_from(s.Scan).where(
            s.Scan.status == s.ScanStatus.RUNNING, s.Scan.id != scan_id)) > 0


class Interrupted(Exception):
    """Ends a scan's ``run`` as interrupted, with this reason (``tagger serve`` stopping)."""


class Workers(Protocol):
    """Local worker processes for a scan: started when it queues its first job, stopped when
    it ends (``tagger.workers.processes.ProcessGroup`` for ``tagger scan``; ``tagger serve``
    shares one group between its scans)."""

    #: optional: a scan of at most this many files would be run differently (``discover_and_queue``)
    size_up_to: int

    def start(self, expected: Optional[int] = None) -> Optional["Checked"]:
        """Start (or join) the workers; what ``wait`` asks whether they still run. ``expected``:
        how many files the scan queues in all, where known when they start."""

    def stop(self) -> None:
        """Stop (or leave) them; called once, however the scan ends."""


class Checked(Protocol):
    def check(self) -> bool: ...


def run(settings: Settings, scan_id: int, roots: list[str], options: ScanOptions, *,
        workers: Optional[Workers] = None, follow: bool = True,
        on_discovered: Optional[Callable[[int, int], None]] = None,
        on_progress: Callable[[Progress], None] = lambda _p: None,
        within: Optional[Iterable[str]] = None) -> s.ScanStatus:
    """Run a recorded scan: walk the roots and queue a job per file, start ``workers`` with the
    first job, follow the jobs to the end, finish the scan. ``tagger scan`` and ``tagger serve``
    both run scans through here.

    ``follow=False`` (jobs for remote workers, not waited for) returns ``"running"`` once
    everything is queued. Otherwise returns the status the scan ended with. However the run
    ends, what is unfinished is recorded: interrupted (Ctrl-C, SIGTERM raised as
    KeyboardInterrupt, ``Interrupted``, the broker or the disk gone) or an internal error, each unfinished
    analysis failed with the reason, the scan marked interrupted; then the exception goes on
    to the caller, which says it its own way.
    """
    from tagger.errors import environment_error

    started = time.monotonic()
    checked: Optional[Checked] = None
    started_workers = False

    def first_job(expected: Optional[int]) -> None:
        nonlocal checked, started_workers
        if workers is not None:
            started_workers = True
            checked = workers.start(expected)

    try:
        _, _, queued = discover_and_queue(settings, scan_id, roots, options.force, on_batch=on_discovered,
                                          on_first_job=first_job, within=within, clean=not options.dry_run,
                                          retry_failed=options.retry_failed,
                                          size_up_to=getattr(workers, "size_up_to", 0) if workers is not None else 0)
        if not follow:
            return s.ScanStatus.RUNNING
        if queued:
            wait(settings, scan_id, started, on_progress, workers=checked)
    except BaseException as exc:
        around = environment_error(exc) if isinstance(exc, Exception) else None  # the disk, the broker
        if isinstance(exc, KeyboardInterrupt):
            kind, reason = "interrupted", "scan interrupted before this file was analysed"
        elif isinstance(exc, Interrupted):
            kind, reason = "interrupted", str(exc)
        elif around is not None:
            kind, reason = "interrupted", f"scan stopped: {around}"
        else:
            kind, reason = "internal", f"the scan stopped by an internal error ({type(exc).__name__})"
        if started_workers:
            started_workers = False
            workers.stop()  # before the records: a worker must not finish a file now marked failed
        try:
            fail_unfinished(settings, scan_id, kind, reason)
            finish(settings, scan_id, s.ScanStatus.INTERRUPTED)
            if settings.is_embedded and not _others_running(settings, scan_id):
                queue.clear()  # its messages would only be skipped: the next scan starts clean
        except Exception as record_exc:  # noqa: BLE001 - the database may be what is gone; the next scan reaps it
            log.info("scan %s: could not record its end: %s", scan_id,
                     " ".join(f"{type(record_exc).__name__}: {record_exc}".split())[:300])
        raise
    finally:
        if started_workers:
            workers.stop()
    finish(settings, scan_id, s.ScanStatus.DONE)
    return s.ScanStatus.DONE


# ---------------------------------------------------------------- what each file got

def _outcome_columns() -> tuple:
    # a file's row in ``outcomes``, ``finished_since`` and ``summary(files=True)``
    return (s.Analysis.id, s.Analysis.status, s.File.path, s.File.raw_path, s.File.format, s.Analysis.error_kind,
            s.Analysis.error, s.Prediction.genre, s.Prediction.genres, s.Prediction.confidence, s.Prediction.top,
            s.Prediction.model, s.Prediction.model_version, s.Prediction.previous_genre, s.Prediction.reason,
            s.TagChange.before, s.TagChange.after, s.TagChange.state)


def _outcome_rows(db, *where) -> list[dict]:
    q = (select(*_outcome_columns()).select_from(s.Analysis).join(s.File, s.Analysis.file_id == s.File.id)
         .outerjoin(s.Prediction, s.Prediction.analysis_id == s.Analysis.id)
         .outerjoin(s.TagChange, (s.TagChange.analysis_id == s.Analysis.id)
                    & (s.TagChange.action == s.ChangeAction.WRITE))
         .where(*where))
    rows = []
    for (aid, status, path, raw, fmt, ekind, error, genre, genres, conf, top, model, version, previous, reason,
         before, after, cstate) in db.execute(q):
        previous = list(previous or [])
        # the genre the file holds by this analysis: written (tagged), or the user's, kept
        held = list(genres or [genre]) if status == s.TAGGED else previous if status == s.KEPT else []
        rows.append({
            "id": aid, "path": path, "status": status,
            "genre": genre if status == s.TAGGED else (held[0] if held else None), "genres": held,
            "predicted": genre, "confidence": None if conf is None else round(float(conf), 4),
            "top": [[t[0], round(float(t[1]), 4)] for t in (top or [])[:3]],
            "model": f"{model} {version}" if model else None, "previous_genre": previous,
            # why no genre may be written whatever the confidence (does not sound like music)
            "reason": reason,
            "change": ({"before": dict(before or {}), "after": dict(after or {}), "state": cstate}
                       if after is not None else None),
            "error": {"kind": ekind, "reason": error} if status == s.FAILED else None,
            "_raw": raw, "_format": fmt, "_predicted_genres": list(genres or []), "_confidence": conf,
            "_model": model, "_version": version,
        })
    return rows


def _would(row: dict, options: ScanOptions) -> None:
    """For a dry run's file: what a real scan would have done with it (``would``: write, keep,
    low_confidence, or None when its tags cannot be read now) and the change it would have
    written (``change``: before, after), from the file's tags as they are now (a dry run wrote
    nothing) and the scan's options, decided as ``pipeline`` decides and named as it writes."""
    from tagger import pipeline, tags
    from tagger.errors import TaggerError
    from tagger.models.base import Prediction

    if row["predicted"] is None:
        row["would"] = None
        return
    prediction = Prediction(genre=row["predicted"], confidence=float(row["_confidence"]), top=[],
                            model=row["_model"], version=row["_version"], decided_by="",
                            genres=row["_predicted_genres"], reason=row["reason"])
    if prediction.confidence < options.min_confidence or prediction.reason:  # whatever the file holds
        row["would"] = pipeline.LOW_CONFIDENCE
        return
    try:
        current = tags.read(os.fsdecode(row["_raw"]), row["_format"])
    except (TaggerError, OSError):
        row["would"] = None
        return
    decision = pipeline.decide(prediction, current, options, row["_format"])
    row["would"] = decision.action
    if decision.action == pipeline.KEEP:
        shown = tags.shown_genre(current)
        row["genre"], row["genres"] = shown[0], shown
    elif decision.action == pipeline.WRITE:
        row["genre"], row["genres"] = row["predicted"], list(row["_predicted_genres"] or [row["predicted"]])
        row["change"] = {"before": {k: list(v) for k, v in current.items()}, "after": decision.fields,
                         "state": None}


def _public(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def outcomes(settings: Settings, scan_id: int) -> list[dict]:
    """Every file of a scan with what it got, by path: ``status``; ``genre``/``genres`` (written,
    or the user's kept; for a dry run what it would write or keep); ``predicted``, ``confidence``,
    ``top`` (3 candidates), ``model``; ``previous_genre``; ``reason`` (why no genre may be written
    whatever the confidence: "does not sound like music (…)"; else None); ``change`` (the tag diff: ``before``,
    ``after`` of genre, confidence and model; for a dry run the one it would write); ``would``
    (dry runs only); ``error`` (failures: kind, reason).

    A dry run's rows read each file's tags now, to say what a real scan would write."""
    with session_scope(settings.database_url) as db:
        options = ScanOptions.from_record(db.get(s.Scan, scan_id).options)
        rows = _outcome_rows(db, s.Analysis.scan_id == scan_id)
    rows.sort(key=lambda r: (r["path"], r["id"]))
    for r in rows:
        if r["status"] == s.DRY_RUN:
            _would(r, options)
    return [_public(r) for r in rows]


class Cursor:
    """Where ``finished_since`` has got to in a scan: every analysis id up to ``upto`` has been
    handed out, and those above it in ``seen``. Analyses finish out of id order (several workers,
    retries), so "ids above the last one seen" alone would skip one finishing after a later one."""

    def __init__(self) -> None:
        self.upto = 0
        self.seen: set[int] = set()


def finished_since(settings: Settings, scan_id: int, cursor: Cursor) -> list[dict]:
    """The scan's analyses finished since the last call with this ``cursor``, by id: rows as
    ``outcomes`` gives them (``tagger scan -v`` prints one line each as files finish)."""
    from sqlalchemy import case

    with session_scope(settings.database_url) as db:
        options = ScanOptions.from_record(db.get(s.Scan, scan_id).options)
        # what is still open is asked first: an analysis finishing between the two queries is then
        # either handed out now or still above the new ``upto``
        first_open, last = db.execute(
            select(func.min(case((s.Analysis.status.in_([s.QUEUED, s.RUNNING]), s.Analysis.id))),
                   func.max(s.Analysis.id)).where(s.Analysis.scan_id == scan_id, s.Analysis.id > cursor.upto)).one()
        ids = [i for i in db.scalars(select(s.Analysis.id).where(
            s.Analysis.scan_id == scan_id, s.Analysis.id > cursor.upto, s.Analysis.status.in_(s.FINISHED))
            .order_by(s.Analysis.id)) if i not in cursor.seen]
        rows = _outcome_rows(db, s.Analysis.id.in_(ids)) if ids else []
    cursor.seen.update(ids)
    if first_open is not None:
        cursor.upto = first_open - 1
    elif last is not None:
        cursor.upto = last
    cursor.seen = {i for i in cursor.seen if i > cursor.upto}
    rows.sort(key=lambda r: r["id"])
    for r in rows:
        if r["status"] == s.DRY_RUN:
            _would(r, options)
    return [_public(r) for r in rows]


def _genre_counts(db, scan_id: int) -> dict[str, int]:
    """Genres written plus genres kept (the user's, as kept): what the files hold by this scan,
    counted as ``tagger report`` counts the library (a prediction that wrote nothing is not a genre)."""
    counts: dict[str, int] = dict(db.execute(
        select(s.Prediction.genre, func.count()).join(s.Analysis, s.Prediction.analysis_id == s.Analysis.id)
        .where(s.Analysis.scan_id == scan_id, s.Analysis.status == s.TAGGED).group_by(s.Prediction.genre)).all())
    for previous in db.scalars(
            select(s.Prediction.previous_genre).join(s.Analysis, s.Prediction.analysis_id == s.Analysis.id)
            .where(s.Analysis.scan_id == scan_id, s.Analysis.status == s.KEPT)):
        if previous:
            counts[previous[0]] = counts.get(previous[0], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def summary(settings: Settings, scan_id: int, files: bool = False) -> dict:
    """What a scan did, as plain data (the CLI prints it, ``--json`` dumps it).

    ``genres``: genres written plus the users' genres kept. ``files``: also every file's row
    (``outcomes``); a dry run's then come with ``would_genres`` (what it would write or keep).
    """
    with session_scope(settings.database_url) as db:
        scan = db.get(s.Scan, scan_id)
        counts = dict(db.execute(select(s.Analysis.status, func.count()).where(s.Analysis.scan_id == scan_id)
                                 .group_by(s.Analysis.status)).all())
        failed = db.execute(
            select(s.File.path, s.Analysis.error_kind, s.Analysis.error).join(s.File, s.Analysis.file_id == s.File.id)
            .where(s.Analysis.scan_id == scan_id, s.Analysis.status == s.FAILED).order_by(s.File.path)
        ).all()
        problems = db.execute(select(s.Error.path, s.Error.message).where(
            s.Error.scan_id == scan_id, s.Error.analysis_id.is_(None))).all()
        genres = _genre_counts(db, scan_id)
        end = scan.finished_at or s.utcnow()
        start = scan.started_at
        if start.tzinfo is None:  # SQLite returns naive datetimes
            end = end.replace(tzinfo=None)
        seconds = max((end - start).total_seconds(), 0.0)
        analysed = sum(counts.values())
        doc = {
            "scan_id": scan.id,
            "status": scan.status,
            "roots": scan.roots,
            "options": scan.options,
            "started_at": scan.started_at.isoformat(),
            "finished_at": scan.finished_at.isoformat() if scan.finished_at else None,
            "seconds": round(seconds, 2),
            "found": scan.found,
            "unchanged": scan.skipped,
            "queued": scan.queued,
            "tagged": counts.get(s.TAGGED, 0),
            "low_confidence": counts.get(s.LOW_CONFIDENCE, 0),
            "kept_user_genre": counts.get(s.KEPT, 0),
            "dry_run": counts.get(s.DRY_RUN, 0),
            "failed": counts.get(s.FAILED, 0),
            "interrupted": counts.get(s.INTERRUPTED, 0),
            "pending": counts.get(s.QUEUED, 0) + counts.get(s.RUNNING, 0),
            "files_per_second": round(analysed / seconds, 2) if seconds else None,
            "genres": genres,
            "failures": [{"path": p, "kind": k, "reason": r} for p, k, r in failed],
            "problems": [{"path": p, "reason": r} for p, r in problems],
        }
    if files:
        doc["files"] = outcomes(settings, scan_id)
        if doc["dry_run"]:
            would: dict[str, int] = {}
            for r in doc["files"]:
                if r.get("would") in ("write", "keep") and r["genre"]:
                    would[r["genre"]] = would.get(r["genre"], 0) + 1
            doc["would_genres"] = dict(sorted(would.items(), key=lambda kv: (-kv[1], kv[0])))
    return doc


def default_roots(paths: Iterable[str]) -> list[str]:
    return [str(Path(p).expanduser()) for p in paths]
