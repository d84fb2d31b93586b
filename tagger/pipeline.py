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
from typing import Optional

from tagger import audio, formats, record, tags
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
    """
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
    record.finish(settings, job, status, prediction, (written or {}).get("before"), started)
    log.info("%s %s: %s (%.2f, %s) in %.2fs", status, job.path, prediction.genre,
             prediction.confidence, prediction.model, time.monotonic() - started)
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


def fields_for(prediction: Prediction, options: ScanOptions, fmt: str) -> Optional[dict[str, list[str]]]:
    """tagger's fields as a scan with ``options`` writes them for ``prediction`` into a file of
    format ``fmt``: the genres as named (``options.naming``; several as the format's players read
    them, ``tags.lists_genres``), the confidence, the model, and what the format stores a second
    time (``tags.stored``: a WAV's INFO genre); None when no genre may be written."""
    genres = options.naming.written(prediction.genres or [prediction.genre], lists=tags.lists_genres(fmt))
    if not genres:
        return None
    return tags.stored(fmt, {"genre": genres, "confidence": [f"{prediction.confidence:.3f}"],
                             "model": [f"{prediction.model} {prediction.version}"]})


def _run(job: record.Job, settings: Settings) -> tuple[str, Prediction, Optional[dict]]:
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
    if record.is_users_genre(current) and not opts.overwrite:
        return s.KEPT, prediction, {"before": current, "after": None}
    wanted = fields_for(prediction, opts, fmt)
    if wanted is None:  # its top genre is off the user's list (genres_only)
        return s.LOW_CONFIDENCE, prediction, {"before": current, "after": None}
    change_id, before = record.begin_change(settings, file_id=job.file_id, scan_id=job.scan_id,
                                            analysis_id=job.analysis_id, action=s.ChangeAction.WRITE,
                                            before=current, after=wanted)
    record.journaled_write(settings, change_id, job.path, fmt, tags.FileStat(job.size, job.mtime_ns))
    return s.TAGGED, prediction, {"before": before, "after": wanted}
