"""The results database as the API shows it: scans and the latest prediction per file."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import func, select

from tagger import scan as scan_mod
from tagger.api.openapi import MAX_ID
from tagger.config import Settings
from tagger.db import schema as s
from tagger.db.engine import session_scope


def _iso(dt: Optional[datetime]) -> Optional[str]:
    if dt is None:
        return None
    # SQLite hands back naive datetimes; tagger stores UTC
    dt = dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
    return dt.isoformat(timespec="seconds")


def _page(page: int, per_page: int, total: int, items: list) -> dict[str, Any]:
    return {"page": page, "per_page": per_page, "total": total, "pages": -(-total // per_page),
            "items": items}


def scan_summary(settings: Settings, scan_id: int) -> Optional[dict[str, Any]]:
    """One scan as ``tagger scan --json`` prints it, with UTC timestamps; None if there is none."""
    if not 1 <= scan_id <= MAX_ID:
        return None
    with session_scope(settings.database_url) as db:
        scan = db.get(s.Scan, scan_id)
        if scan is None:
            return None
        started, finished = scan.started_at, scan.finished_at
    doc = scan_mod.summary(settings, scan_id)
    doc["started_at"], doc["finished_at"] = _iso(started), _iso(finished)
    return doc


def list_scans(settings: Settings, page: int, per_page: int) -> dict[str, Any]:
    """Scans, newest first, without their per-file failure lists."""
    with session_scope(settings.database_url) as db:
        total = db.scalar(select(func.count()).select_from(s.Scan)) or 0
        ids = list(db.scalars(select(s.Scan.id).order_by(s.Scan.id.desc())
                              .offset((page - 1) * per_page).limit(per_page)))
    items = []
    for scan_id in ids:
        doc = scan_summary(settings, scan_id)
        if doc is not None:
            doc.pop("failures", None)
            doc.pop("problems", None)
            items.append(doc)
    return _page(page, per_page, total, items)


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def list_files(settings: Settings, page: int, per_page: int, genre: Optional[str] = None,
               min_confidence: Optional[float] = None, q: Optional[str] = None) -> dict[str, Any]:
    """Files with their latest prediction, filtered (all filters AND) and paginated by path.

    ``genre`` matches the predicted genre case-insensitively; ``q`` is a
    case-insensitive substring of the path. Files never predicted (only
    failed analyses) are not listed.
    """
    latest = (select(s.Prediction.file_id, func.max(s.Prediction.id).label("pid"))
              .group_by(s.Prediction.file_id).subquery())
    where = []
    if genre:
        where.append(func.lower(s.Prediction.genre) == genre.lower())
    if min_confidence is not None:
        where.append(s.Prediction.confidence >= min_confidence)
    if q:
        where.append(s.File.path.ilike(_like(q), escape="\\"))
    base = (select(s.File, s.Prediction).join(latest, latest.c.file_id == s.File.id)
            .join(s.Prediction, s.Prediction.id == latest.c.pid).where(*where))
    with session_scope(settings.database_url) as db:
        total = db.scalar(select(func.count()).select_from(base.subquery())) or 0
        rows = db.execute(base.order_by(s.File.path, s.File.id).offset((page - 1) * per_page).limit(per_page)).all()
        items = [{
            "id": f.id,
            "path": f.path,
            "format": f.format,
            "genre": p.genre,
            "confidence": round(float(p.confidence), 6),
            "top": [{"genre": str(g), "probability": round(float(x), 6)} for g, x in (p.top or [])],
            "model": p.model,
            "version": p.model_version,
            "decided_by": p.decided_by,
            "predicted_at": _iso(p.created_at),
            "written_genre": f.genre,
        } for f, p in rows]
    return _page(page, per_page, total, items)
