"""analyse(): the one function a job runs, for one file of one scan.

decode → features → predict → write tags → record (tagger/record.py holds what
is recorded and the journaled tag write). The database row of the
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

from tagger import audio, formats, record, tags, timing
from tagger.config import Settings
from tagger.db import schema as s
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


def analyse(analysis_id: int, settings: Settings) -> Optional[str]:
    """Analyse one queued file; returns the analysis's final status (None: already done).

    Permanent problems with the file are recorded as a failed analysis and do
    not raise. Transient ones raise TransientError, for the queue to retry.
    The log line of a finished analysis says where its time went (``tagger.timing``).
    """
    with timing.measuring() as spent:
        return _analyse(analysis_id, settings, spent)


def _analyse(analysis_id: int, settings: Settings, spent: timing.Timings) -> Optional[str]:
    with timing.stage("db"):
        job = record.start(settings, analysis_id)
    if job is None:
        return None  # no such analysis (message dropped), or a redelivery of one finished
    started = time.monotonic()
    try:
        status, prediction, written = _run(job, settings)
    except TaggerError as exc:
        if not exc.permanent:
            raise
        record.record_failure(settings, job.analysis_id, exc.kind, exc.message, final=True,
                              seconds=time.monotonic() - started)
        log.info("failed %s: %s", job.path, exc.message)
        return s.FAILED
    except Exception as exc:
        if is_transient(exc):
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        # a defect, not the file's fault; record it rather than retry it forever
        record.record_failure(settings, job.analysis_id, "internal", f"internal error: {type(exc).__name__}: {exc}",
                              final=True, seconds=time.monotonic() - started)
        log.exception("internal error on %s", job.path)
        return s.FAILED
    with timing.stage("db"):
        record.finish(settings, job, status, prediction, (written or {}).get("before"), started)
    total = time.perf_counter() - spent.started
    log.info("%s %s: %s (%.2f, %s) in %.2fs (%s)", status, job.path, prediction.genre,
             prediction.confidence, prediction.model, total, spent.line(total))
    return status


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


#: what a scan does with a heard file (``decide``)
WRITE, KEEP, LOW_CONFIDENCE = "write", "keep", "low_confidence"


@dataclass(frozen=True)
class Decision:
    """What to do with a heard file: ``action`` (WRITE, KEEP the user's genre, or LOW_CONFIDENCE:
    write nothing) and, for WRITE, the ``fields`` to write (``fields_for``)."""

    action: str
    fields: Optional[dict[str, list[str]]] = None


def decide(prediction: Prediction, current: dict[str, list[str]], options: ScanOptions,
           fmt: Optional[str] = None) -> Decision:
    """The rule every route that writes tagger's genres follows (a scan's jobs, a dry run's "would",
    the beets plugin): below ``options.min_confidence`` nothing is written, nor for a prediction
    with a ``reason`` against any genre (a track that does not sound like music); a genre the user set
    (``current`` holds a genre and no model field beside it) is kept unless ``options.overwrite``;
    a top genre off ``genres_only`` is written as nothing, like an unsure one. ``fmt``: the
    file's format, which says how several genres are stored (``fields_for``); None for a
    writer that stores them as a list itself (beets)."""
    if prediction.confidence < options.min_confidence or prediction.reason:
        return Decision(LOW_CONFIDENCE)
    if record.is_users_genre(current) and not options.overwrite:
        return Decision(KEEP)
    wanted = fields_for(prediction, options, fmt)
    return Decision(WRITE, wanted) if wanted is not None else Decision(LOW_CONFIDENCE)


def fields_for(prediction: Prediction, options: ScanOptions, fmt: Optional[str] = None) -> Optional[dict[str, list[str]]]:
    """tagger's fields as a scan with ``options`` writes them for ``prediction`` into a file of
    format ``fmt``: the genres as named (``options.naming``; several as the format's players read
    them, ``tags.lists_genres``), the confidence, the model, and what the format stores a second
    time (``tags.stored``: a WAV's INFO genre); None when no genre may be written. Without
    ``fmt``, the fields as a list-keeping writer takes them (several genres, several values)."""
    lists = True if fmt is None else tags.lists_genres(fmt)
    genres = options.naming.written(prediction.genres or [prediction.genre], lists=lists)
    if not genres:
        return None
    fields = {"genre": genres, "confidence": [f"{prediction.confidence:.3f}"],
              "model": [f"{prediction.model} {prediction.version}"]}
    return fields if fmt is None else tags.stored(fmt, fields)


def _run(job: record.Job, settings: Settings) -> tuple[str, Prediction, Optional[dict]]:
    fmt = check_file(job.path, bool(settings.path_map))
    opts = job.options
    predictor = predictor_for(opts.model or settings.model, settings.model_dirs)
    prediction, heard = predictor.hear(job.path, fmt, opts.hearing)
    if heard.student_windows or heard.by == "student":
        log.debug("%s: the student heard %d of %d windows%s", job.path,
                  heard.windows if heard.by == "student" else heard.student_windows, heard.planned,
                  "" if heard.by == "student" else f", then the teacher {heard.windows}")
    else:
        log.debug("%s: heard %d of %d windows", job.path, heard.windows, heard.planned)

    with timing.stage("tags"):
        current = tags.read(job.path, fmt)
    if opts.dry_run:
        return s.DRY_RUN, prediction, {"before": current, "after": None}
    decision = decide(prediction, current, opts, fmt)
    if decision.action != WRITE:
        status = s.KEPT if decision.action == KEEP else s.LOW_CONFIDENCE
        return status, prediction, {"before": current, "after": None}
    wanted = decision.fields
    with timing.stage("db"):
        change_id, before = record.begin_change(settings, file_id=job.file_id, scan_id=job.scan_id,
                                                analysis_id=job.analysis_id, action=s.ChangeAction.WRITE,
                                                before=current, after=wanted)
    with timing.stage("tags"):  # the write and its journal entry
        record.journaled_write(settings, change_id, job.path, fmt, tags.FileStat(job.size, job.mtime_ns))
    return s.TAGGED, prediction, {"before": before, "after": wanted}
