"""Undo and history: every change tagger made to a file can be reversed, and is on record.

A change is a ``TagChange`` holding our fields before and after. Undoing it
writes ``before`` back and records the reversal as a new change (action
``undo``) that points at what it reverts; undoing that one writes the values
back again (a redo). A file whose fields no longer hold what the change
wrote (someone edited it since) is left alone and reported.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Optional

from sqlalchemy import select

from tagger import formats, record, tags
from tagger.config import Settings
from tagger.db import schema as s
from tagger.db.engine import session_scope
from tagger.errors import TaggerError


@dataclass
class UndoResult:
    path: str
    status: str  # restored | would_restore (a dry run) | unchanged | skipped | failed
    reason: str = ""
    genre_before: Optional[list[str]] = None
    genre_after: Optional[list[str]] = None
    change_id: Optional[int] = None

    def as_dict(self) -> dict:
        return asdict(self)


def _latest_in_chain(db, change: s.TagChange) -> s.TagChange:
    """Follow undo records that revert ``change`` (and revert those) to the newest."""
    current = change
    while True:
        nxt = db.scalars(select(s.TagChange).where(s.TagChange.reverts_id == current.id,
                                                   s.TagChange.state == s.ChangeState.DONE)
                         .order_by(s.TagChange.id.desc())).first()
        if nxt is None:
            return current
        current = nxt


def scan_exists(settings: Settings, scan_id: int) -> bool:
    with session_scope(settings.database_url) as db:
        return db.get(s.Scan, scan_id) is not None


def latest_scan_with_changes(settings: Settings) -> Optional[int]:
    """The newest scan that wrote tags (what a bare ``tagger undo`` undoes); None when none did."""
    with session_scope(settings.database_url) as db:
        return db.scalar(select(s.TagChange.scan_id).where(s.TagChange.action == s.ChangeAction.WRITE,
                                                           s.TagChange.state == s.ChangeState.DONE)
                         .order_by(s.TagChange.scan_id.desc()).limit(1))


def changes_to_undo(settings: Settings, scan_id: Optional[int] = None, path: Optional[str] = None) -> list[int]:
    """Ids of the newest change per file for a scan, or the newest change of one file."""
    with session_scope(settings.database_url) as db:
        if scan_id is not None:
            firsts = db.scalars(select(s.TagChange).where(
                s.TagChange.scan_id == scan_id, s.TagChange.action == s.ChangeAction.WRITE,
                s.TagChange.state == s.ChangeState.DONE)
                .order_by(s.TagChange.id)).all()
            return [_latest_in_chain(db, c).id for c in firsts]
        raw = os.fsencode(os.path.abspath(path))
        f = db.scalars(select(s.File).where(s.File.raw_path == raw)).first()
        if f is None:
            return []
        latest = db.scalars(select(s.TagChange).where(s.TagChange.file_id == f.id,
                                                      s.TagChange.state == s.ChangeState.DONE)
                            .order_by(s.TagChange.id.desc())).first()
        return [latest.id] if latest else []


def revert(settings: Settings, change_id: int, dry_run: bool = False) -> UndoResult:
    """Write back what the change replaced, if the file still holds what it wrote."""
    with session_scope(settings.database_url) as db:
        change = db.get(s.TagChange, change_id)
        f = change.file
        path = settings.map_path(os.fsdecode(f.raw_path))
        before, after, scan_id = dict(change.before), dict(change.after), change.scan_id
    result = UndoResult(path=os.fsencode(path).decode("utf-8", "replace"), status="restored",
                        genre_before=after.get("genre", []), genre_after=before.get("genre", []))
    try:
        fmt = formats.confirm(path)
        current = tags.read(path, fmt)
    except (TaggerError, OSError) as exc:
        result.status, result.reason = "failed", str(exc) if isinstance(exc, TaggerError) else exc.strerror
        return result
    if tags.holds(current, before):
        result.status, result.reason = "unchanged", "the file already holds these values"
        return result
    if not tags.holds(current, after):
        result.status = "skipped"
        result.reason = "the file's tags changed since tagger wrote them; left as they are"
        return result
    if dry_run:
        result.status = "would_restore"
        return result
    record_id, _ = record.begin_change(settings, file_id=f.id, scan_id=scan_id, action=s.ChangeAction.UNDO,
                                       before=current, after=before, reverts_id=change_id)
    try:
        record.journaled_write(settings, record_id, path, fmt, tags.FileStat.of(path))
    except TaggerError as exc:
        result.status, result.reason = "failed", str(exc)
        return result
    with session_scope(settings.database_url) as db:
        db.get(s.File, f.id).genre = record.our_genre(before, settings.naming)
    result.change_id = record_id
    return result


def undo(settings: Settings, scan_id: Optional[int] = None, path: Optional[str] = None,
         dry_run: bool = False) -> list[UndoResult]:
    return [revert(settings, cid, dry_run) for cid in changes_to_undo(settings, scan_id, path)]


def history(settings: Settings, path: str) -> list[dict]:
    """Every prediction and tag change recorded for one file, oldest first."""
    raw = os.fsencode(os.path.abspath(path))
    with session_scope(settings.database_url) as db:
        f = db.scalars(select(s.File).where(s.File.raw_path == raw)).first()
        if f is None:
            return []
        events = []
        rows = db.execute(select(s.Analysis, s.Prediction).outerjoin(
            s.Prediction, s.Prediction.analysis_id == s.Analysis.id).where(s.Analysis.file_id == f.id)).all()
        for a, p in rows:
            events.append({
                # when it started: the tag write it led to comes after that
                "at": (a.started_at or a.queued_at).isoformat(timespec="milliseconds"), "scan_id": a.scan_id,
                "event": "analysis", "status": a.status, "error": a.error,
                "genre": p.genre if p else None, "confidence": round(p.confidence, 4) if p else None,
                "top": p.top if p else None, "model": f"{p.model} {p.model_version}" if p else None,
                "decided_by": p.decided_by if p else None, "reason": p.reason if p else None,
                # the genre the file held before; for a kept one, the user's genre that was kept
                "previous_genre": list(p.previous_genre or []) if p else [],
                "kept_genre": list(p.previous_genre or []) if p and a.status == s.KEPT else None,
            })
        for c in db.scalars(select(s.TagChange).where(s.TagChange.file_id == f.id)):
            events.append({
                "at": c.created_at.isoformat(timespec="milliseconds"), "scan_id": c.scan_id, "event": c.action,
                "change_id": c.id, "reverts": c.reverts_id, "state": c.state,
                "genre_before": c.before.get("genre", []), "genre_after": c.after.get("genre", []),
                "before": c.before, "after": c.after,
            })
        order = {"analysis": 0, s.ChangeAction.WRITE: 1, s.ChangeAction.UNDO: 2}
        events.sort(key=lambda e: (e["at"], order.get(e["event"], 3), e.get("change_id") or 0))
        return events

