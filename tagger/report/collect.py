"""The report's facts: ``collect`` queries the results database into one plain-data document.

Every format (table.py, plain.py, html.py) renders that same document, so they
always carry the same facts. Everything that grows with the
library is aggregated in SQL; the long lists are cut at ``limit`` rows and the
document says so (``totals`` and ``truncated``).

Which rows a list holds: a file appears once, with its latest finished
analysis among the scans in scope, so "failed" means failing now, not every
attempt ever made.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from typing import Any, Optional

from sqlalchemy import and_, case, func, or_, select

from tagger.config import Settings
from tagger.db import schema as s
from tagger.db.engine import session_scope
from tagger.naming import genre_id

LIMIT = 200
#: the confidence histogram's bins: [0, 0.1), [0.1, 0.2), … [0.9, 1.0]
BINS = 10
#: the lists a report can be narrowed to (``--low-confidence``, ``--failed``); the default
LISTS = ("low_confidence", "failed", "changes")
#: every list a report can hold: the default ones and, when asked for (``--files``), one row per file
ALL_LISTS = LISTS + ("files",)
#: per-scan counts, in the order the table, CSV and chart show them
SCAN_COUNTS = ("found", "unchanged", "queued", "tagged", "low_confidence", "kept_user_genre",
               "dry_run_predictions", "failed", "pending")


@dataclass(frozen=True)
class Filters:
    """What a report is narrowed to; every field is optional and they combine (AND)."""

    scan_id: Optional[int] = None
    since: Optional[datetime] = None  # aware, UTC
    genre: Optional[str] = None  # compared case-insensitively
    lists: tuple[str, ...] = field(default=LISTS)  # which file lists to fill

    def as_dict(self) -> dict[str, Any]:
        return {"scan_id": self.scan_id, "since": _iso(self.since), "genre": self.genre, "lists": list(self.lists)}


def parse_since(text: str) -> datetime:
    """An ISO date (``2024-05-01``, midnight local time) or datetime, as an aware UTC datetime."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            value = datetime.combine(date.fromisoformat(text), time())
        else:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO date or datetime: {text!r} (e.g. 2024-05-01 or 2024-05-01T18:30)") from None
    if value.tzinfo is None:
        value = value.astimezone()  # the user's local time
    return value.astimezone(timezone.utc)


def _utc(dt: Optional[datetime]) -> Optional[datetime]:
    # SQLite hands back naive datetimes; tagger stores UTC
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _iso(dt: Optional[datetime]) -> Optional[str]:
    dt = _utc(dt)
    return dt.isoformat(timespec="seconds") if dt else None


def _r(x: Optional[float], nd: int = 4) -> Optional[float]:
    return None if x is None else round(float(x), nd)


def collect(settings: Settings, scan_id: Optional[int] = None, limit: int = LIMIT,
            filters: Optional[Filters] = None) -> dict[str, Any]:
    """One report document: summary, scan history, genres, confidence histogram, file lists.

    Parameters
    ----------
    settings : where the results database is.
    scan_id : shorthand for ``Filters(scan_id=...)`` (ignored when ``filters`` is given).
    limit : at most this many scans in the history and rows in each file list.
    filters : narrow the report; see ``Filters``.

    Returns
    -------
    dict of plain JSON-able data: ``report`` (when, filters, limit, the latest scan's
    min_confidence, what the genres count), ``summary`` (``latest_scan``, ``library`` counts),
    ``scans`` (oldest first, per-scan outcome counts), ``genres``, ``confidence`` (ten bins),
    ``low_confidence``, ``failed``, ``changes``, ``files`` (rows; ``files`` only when
    ``filters.lists`` names it), ``totals`` (full list lengths) and ``truncated`` (the lists cut
    at ``limit``).

    The genres, unscoped, are what the library's files hold by tagger: the genre tagger wrote,
    or the user's genre a scan kept (its first value), for each file; narrowed to scans, the
    latest prediction of each file in them.
    """
    f = filters or Filters(scan_id=scan_id)
    # a genre as written (Hip-Hop, or the user's own name for it) finds the taxonomy's id (hiphop)
    genre = (genre_id(f.genre, settings.genre_names) or f.genre.lower()) if f.genre else None
    with session_scope(settings.database_url) as db:
        scan_conds = []
        if f.scan_id is not None:
            scan_conds.append(s.Scan.id == f.scan_id)
        if f.since is not None:
            scan_conds.append(s.Scan.started_at >= f.since)
        in_scope = select(s.Scan.id).where(*scan_conds)
        scoped = bool(scan_conds)

        # ---- scan history: the latest ``limit`` scans, oldest first, counts grouped in SQL
        n_scans = db.scalar(select(func.count()).select_from(s.Scan).where(*scan_conds))
        scan_rows = list(db.scalars(select(s.Scan).where(*scan_conds).order_by(s.Scan.id.desc()).limit(limit)))[::-1]
        first = scan_rows[0].id if scan_rows else 0
        shown = and_(s.Analysis.scan_id >= first, s.Analysis.scan_id.in_(in_scope))
        by_status: dict[int, dict[str, int]] = {}
        for sc, st, n in db.execute(select(s.Analysis.scan_id, s.Analysis.status, func.count())
                                    .where(shown).group_by(s.Analysis.scan_id, s.Analysis.status)):
            by_status.setdefault(sc, {})[st] = n
        mean_conf = dict(db.execute(
            select(s.Analysis.scan_id, func.avg(s.Prediction.confidence))
            .join(s.Prediction, s.Prediction.analysis_id == s.Analysis.id).where(shown).group_by(s.Analysis.scan_id)).all())
        written = dict(db.execute(
            select(s.TagChange.scan_id, func.count()).where(
                s.TagChange.scan_id >= first, s.TagChange.scan_id.in_(in_scope),
                s.TagChange.action == s.ChangeAction.WRITE, s.TagChange.state == s.ChangeState.DONE).group_by(s.TagChange.scan_id)).all())
        unreadable = dict(db.execute(
            select(s.Error.scan_id, func.count()).where(
                s.Error.scan_id >= first, s.Error.scan_id.in_(in_scope), s.Error.analysis_id.is_(None))
            .group_by(s.Error.scan_id)).all())
        scans = [_scan_entry(sc, by_status.get(sc.id, {}), mean_conf.get(sc.id), written.get(sc.id, 0),
                             unreadable.get(sc.id, 0)) for sc in scan_rows]

        # ---- each file's latest finished analysis among the scans in scope
        latest = (select(func.max(s.Analysis.id).label("aid"))
                  .where(s.Analysis.status.in_(s.FINISHED), *([s.Analysis.scan_id.in_(in_scope)] if scoped else []))
                  .group_by(s.Analysis.file_id)).subquery()
        pred_genre = [func.lower(s.Prediction.genre) == genre] if genre else []

        def latest_predictions(*cols):
            return (select(*cols).select_from(s.Analysis)
                    .join(latest, latest.c.aid == s.Analysis.id)
                    .join(s.Prediction, s.Prediction.analysis_id == s.Analysis.id).where(*pred_genre))

        # ---- genre distribution: what the library's files hold by tagger (written or kept), or the
        # predictions of the scans in scope
        library_genres = _library_genres(db)
        if scoped:
            basis = "predictions"
            counted = db.execute(latest_predictions(s.Prediction.genre, func.count())
                                 .group_by(s.Prediction.genre)).all()
        else:
            basis = "library"
            counted = [(g, n) for g, n in library_genres.items() if not genre or g.lower() == genre]
        counted = sorted(counted, key=lambda r: (-r[1], r[0]))
        total_genre = sum(n for _, n in counted) or 1
        genres = [{"genre": g, "files": n, "share": round(n / total_genre, 4)} for g, n in counted]

        # ---- confidence histogram of the same predictions, one row of sums
        c = s.Prediction.confidence
        bin_cols = [func.sum(case((and_(c >= i / BINS, c < (i + 1) / BINS) if i < BINS - 1 else c >= i / BINS,
                                   1), else_=0)) for i in range(BINS)]
        hist = db.execute(latest_predictions(func.count(), func.avg(c), func.min(c), func.max(c), *bin_cols)).one()
        n_pred, mean, lo, hi = hist[0], hist[1], hist[2], hist[3]
        confidence = {
            "predictions": n_pred, "mean": _r(mean), "min": _r(lo), "max": _r(hi),
            "bins": [{"from": round(i / BINS, 2), "to": round((i + 1) / BINS, 2), "files": int(hist[4 + i] or 0)}
                     for i in range(BINS)],
        }

        # ---- file lists, each with its full count (the rows stop at ``limit``)
        totals: dict[str, int] = {}
        lists: dict[str, list] = {name: [] for name in ALL_LISTS}
        if "low_confidence" in f.lists:
            q = (latest_predictions(s.Analysis.scan_id, s.File.path, s.Prediction.genre, s.Prediction.confidence,
                                    s.Prediction.top, s.Prediction.model, s.Prediction.reason, s.Analysis.finished_at)
                 .join(s.File, s.Analysis.file_id == s.File.id).where(s.Analysis.status == s.LOW_CONFIDENCE))
            totals["low_confidence"] = db.scalar(select(func.count()).select_from(q.subquery()))
            lists["low_confidence"] = [
                {"scan_id": sc, "path": p, "genre": g, "confidence": _r(conf),
                 "top": [[t[0], _r(t[1])] for t in (top or [])[:3]], "model": m, "reason": why, "at": _iso(at)}
                for sc, p, g, conf, top, m, why, at in db.execute(
                    q.order_by(s.Prediction.confidence, s.File.path).limit(limit))]
        if "failed" in f.lists:
            q = (select(s.Analysis.scan_id, s.File.path, s.Analysis.error_kind, s.Analysis.error, s.Analysis.attempts,
                        s.Analysis.finished_at, s.File.genre)
                 .join(latest, latest.c.aid == s.Analysis.id).join(s.File, s.Analysis.file_id == s.File.id)
                 .where(s.Analysis.status == s.FAILED, *([func.lower(s.File.genre) == genre] if genre else [])))
            totals["failed"] = db.scalar(select(func.count()).select_from(q.subquery()))
            lists["failed"] = [
                {"scan_id": sc, "path": p, "kind": k, "reason": r, "attempts": att, "at": _iso(at), "genre": g}
                for sc, p, k, r, att, at, g in db.execute(q.order_by(s.File.path).limit(limit))]
        if "changes" in f.lists:
            conds = []
            if f.scan_id is not None:
                conds.append(s.TagChange.scan_id == f.scan_id)
            if f.since is not None:
                conds.append(s.TagChange.created_at >= f.since)
            q = (select(s.TagChange.scan_id, s.File.path, s.TagChange.action, s.TagChange.before, s.TagChange.after,
                        s.TagChange.state, s.TagChange.created_at, s.TagChange.id)
                 .join(s.File, s.TagChange.file_id == s.File.id).where(*conds))
            if genre:
                # the genre the change was about: our prediction, else the file's current tag
                q = (q.outerjoin(s.Prediction, s.Prediction.analysis_id == s.TagChange.analysis_id)
                     .where(or_(func.lower(s.Prediction.genre) == genre, func.lower(s.File.genre) == genre)))
            totals["changes"] = db.scalar(select(func.count()).select_from(q.subquery()))
            lists["changes"] = [
                {"scan_id": sc, "path": p, "action": a, "before": (b or {}).get("genre", []),
                 "after": (af or {}).get("genre", []), "state": st, "at": _iso(at)}
                for sc, p, a, b, af, st, at, _id in db.execute(q.order_by(s.TagChange.id.desc()).limit(limit))]

        if "files" in f.lists:
            # each file's latest finished analysis: what it got (written, kept, not sure, failed)
            q = (select(s.Analysis.scan_id, s.File.path, s.Analysis.status, s.Prediction.genre, s.Prediction.genres,
                        s.Prediction.confidence, s.Prediction.top, s.Prediction.previous_genre, s.Prediction.model,
                        s.Prediction.model_version, s.Prediction.reason, s.Analysis.error_kind, s.Analysis.error,
                        s.Analysis.finished_at)
                 .select_from(s.Analysis).join(latest, latest.c.aid == s.Analysis.id)
                 .join(s.File, s.Analysis.file_id == s.File.id)
                 .outerjoin(s.Prediction, s.Prediction.analysis_id == s.Analysis.id)
                 .where(*([or_(func.lower(s.Prediction.genre) == genre,
                               and_(s.Prediction.id.is_(None), func.lower(s.File.genre) == genre))] if genre else [])))
            totals["files"] = db.scalar(select(func.count()).select_from(q.subquery()))
            lists["files"] = [_file_row(*row) for row in db.execute(q.order_by(s.File.path).limit(limit))]

        library = {
            "files": db.scalar(select(func.count()).select_from(s.File)),
            "tagged_files": db.scalar(select(func.count()).select_from(s.File).where(s.File.genre.is_not(None))),
            "genres": len(library_genres),
        }
        min_conf = (scan_rows[-1].options or {}).get("min_confidence") if scan_rows else None

    totals["scans"] = n_scans
    truncated = [name for name, n in totals.items() if n > (len(scans) if name == "scans" else len(lists[name]))]
    return {
        "report": {"generated_at": _iso(s.utcnow()), "filters": f.as_dict(), "limit": limit,
                   "min_confidence": min_conf, "genres_basis": basis},
        "summary": {"latest_scan": scans[-1] if scans else None, "library": library},
        "scans": scans,
        "genres": genres,
        "confidence": confidence,
        **lists,
        "totals": totals,
        "truncated": truncated,
    }


def _library_genres(db) -> dict[str, int]:
    """The genres the library's files hold by tagger: each file's genre tagger wrote, or, where the
    file's latest analysis kept the user's own genre, that genre (its first value)."""
    latest = (select(func.max(s.Analysis.id).label("aid")).where(s.Analysis.status.in_(s.FINISHED))
              .group_by(s.Analysis.file_id)).subquery()
    kept = select(s.Analysis.id).join(latest, latest.c.aid == s.Analysis.id).where(s.Analysis.status == s.KEPT)
    counts: dict[str, int] = dict(db.execute(
        select(s.File.genre, func.count())
        .where(s.File.genre.is_not(None), s.File.id.not_in(select(s.Analysis.file_id).where(s.Analysis.id.in_(kept))))
        .group_by(s.File.genre)).all())
    for previous in db.scalars(select(s.Prediction.previous_genre).where(s.Prediction.analysis_id.in_(kept))):
        if previous:
            counts[previous[0]] = counts.get(previous[0], 0) + 1
    return counts


def _file_row(scan_id, path, status, genre, genres, conf, top, previous, model, version, reason, error_kind, error,
              at) -> dict[str, Any]:
    previous = list(previous or [])
    held = list(genres or [genre]) if status == s.TAGGED else previous if status == s.KEPT else []
    return {
        "scan_id": scan_id, "path": path, "status": status,
        # the genre the file holds by tagger: written (tagged), or the user's, kept; none otherwise
        "genre": genre if status == s.TAGGED else (held[0] if held else None), "genres": held,
        "predicted": genre, "confidence": _r(conf), "top": [[t[0], _r(t[1])] for t in (top or [])[:3]],
        "previous_genre": previous, "model": f"{model} {version}" if model else None, "reason": reason,
        "error": {"kind": error_kind, "reason": error} if status == s.FAILED else None, "at": _iso(at),
    }


def _scan_entry(scan: s.Scan, counts: dict[str, int], mean_conf: Optional[float], written: int,
                unreadable: int) -> dict[str, Any]:
    pending = counts.get(s.QUEUED, 0) + counts.get(s.RUNNING, 0)
    start, end = _utc(scan.started_at), _utc(scan.finished_at)
    return {
        "id": scan.id, "started_at": _iso(start), "finished_at": _iso(end),
        "seconds": round((end - start).total_seconds(), 1) if start and end else None,
        # a scan whose process went away still says "running": the analyses tell the truth
        "status": scan.status if (pending or scan.status != s.ScanStatus.RUNNING) else s.ScanStatus.DONE,
        "roots": list(scan.roots or []), "dry_run": bool((scan.options or {}).get("dry_run")),
        "found": scan.found, "unchanged": scan.skipped, "queued": scan.queued,
        "tagged": counts.get(s.TAGGED, 0), "low_confidence": counts.get(s.LOW_CONFIDENCE, 0),
        "kept_user_genre": counts.get(s.KEPT, 0), "dry_run_predictions": counts.get(s.DRY_RUN, 0),
        "failed": counts.get(s.FAILED, 0), "pending": pending, "tags_written": written,
        "unreadable_paths": unreadable, "mean_confidence": _r(mean_conf),
    }
