"""The report: queries over the results database and renderers (table, JSON, CSV).

``collect`` gathers one plain-data document; every format renders that same
document, so they always carry the same facts.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Optional

from sqlalchemy import func, select

from tagger.config import Settings
from tagger.db import schema as s
from tagger.db.engine import session_scope

LIMIT = 200


def _iso(dt) -> Optional[str]:
    return dt.isoformat(timespec="seconds") if dt else None


def collect(settings: Settings, scan_id: Optional[int] = None, limit: int = LIMIT) -> dict[str, Any]:
    """History of scans, genre distribution, low-confidence and failed files, tag changes."""
    with session_scope(settings.database_url) as db:
        scan_q = select(s.Scan).order_by(s.Scan.id)
        if scan_id is not None:
            scan_q = scan_q.where(s.Scan.id == scan_id)
        scans = []
        for scan in db.scalars(scan_q):
            counts = dict(db.execute(select(s.Analysis.status, func.count())
                                     .where(s.Analysis.scan_id == scan.id).group_by(s.Analysis.status)).all())
            pending = counts.get(s.QUEUED, 0) + counts.get(s.RUNNING, 0)
            scans.append({
                "id": scan.id, "started_at": _iso(scan.started_at), "finished_at": _iso(scan.finished_at),
                "status": scan.status if (pending or scan.status != "running") else "done",
                "roots": scan.roots, "dry_run": bool((scan.options or {}).get("dry_run")),
                "found": scan.found, "unchanged": scan.skipped, "queued": scan.queued,
                "tagged": counts.get(s.TAGGED, 0), "low_confidence": counts.get(s.LOW_CONFIDENCE, 0),
                "kept_user_genre": counts.get(s.KEPT, 0), "dry_run_predictions": counts.get(s.DRY_RUN, 0),
                "failed": counts.get(s.FAILED, 0), "pending": pending,
            })

        def scoped(q):
            return q.where(s.Analysis.scan_id == scan_id) if scan_id is not None else q

        genre_q = (select(s.Prediction.genre, func.count()).join(s.Analysis, s.Prediction.analysis_id == s.Analysis.id)
                   .group_by(s.Prediction.genre).order_by(func.count().desc()))
        if scan_id is None:  # the library now: each file's latest tag we wrote
            genre_q = (select(s.File.genre, func.count()).where(s.File.genre.is_not(None))
                       .group_by(s.File.genre).order_by(func.count().desc()))
        genres = [{"genre": g, "files": n} for g, n in db.execute(scoped(genre_q) if scan_id is not None else genre_q)]

        low = db.execute(scoped(
            select(s.Analysis.scan_id, s.File.path, s.Prediction.genre, s.Prediction.confidence, s.Prediction.top)
            .join(s.File, s.Analysis.file_id == s.File.id).join(s.Prediction, s.Prediction.analysis_id == s.Analysis.id)
            .where(s.Analysis.status == s.LOW_CONFIDENCE).order_by(s.Analysis.id.desc()).limit(limit))).all()
        failed = db.execute(scoped(
            select(s.Analysis.scan_id, s.File.path, s.Analysis.error_kind, s.Analysis.error)
            .join(s.File, s.Analysis.file_id == s.File.id)
            .where(s.Analysis.status == s.FAILED).order_by(s.Analysis.id.desc()).limit(limit))).all()
        change_q = (select(s.TagChange.scan_id, s.File.path, s.TagChange.action, s.TagChange.before,
                           s.TagChange.after, s.TagChange.state, s.TagChange.created_at)
                    .join(s.File, s.TagChange.file_id == s.File.id).order_by(s.TagChange.id.desc()).limit(limit))
        if scan_id is not None:
            change_q = change_q.where(s.TagChange.scan_id == scan_id)
        changes = db.execute(change_q).all()

    return {
        "scans": scans,
        "genres": genres,
        "low_confidence": [{"scan_id": sc, "path": p, "genre": g, "confidence": round(c, 4),
                            "top": [[t[0], round(float(t[1]), 4)] for t in (top or [])]}
                           for sc, p, g, c, top in low],
        "failed": [{"scan_id": sc, "path": p, "kind": k, "reason": r} for sc, p, k, r in failed],
        "changes": [{"scan_id": sc, "path": p, "action": a, "before": (b or {}).get("genre", []),
                     "after": (af or {}).get("genre", []), "state": st, "at": _iso(at)}
                    for sc, p, a, b, af, st, at in changes],
    }


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def render_table(doc: dict[str, Any]) -> str:
    out = ["Scans"]
    out.append(_table(
        ["id", "started", "status", "found", "unchanged", "tagged", "low conf.", "kept", "dry run", "failed", "roots"],
        [[sc["id"], sc["started_at"], sc["status"], sc["found"], sc["unchanged"], sc["tagged"], sc["low_confidence"],
          sc["kept_user_genre"], sc["dry_run_predictions"], sc["failed"], ", ".join(sc["roots"])]
         for sc in doc["scans"]]) if doc["scans"] else "(no scans yet)")
    total = sum(g["files"] for g in doc["genres"]) or 1
    out += ["", "Genres"]
    out.append(_table(["genre", "files", "share", ""],
                      [[g["genre"], g["files"], f"{100 * g['files'] / total:.0f}%", "#" * round(30 * g["files"] / total)]
                       for g in doc["genres"]]) if doc["genres"] else "(none)")
    if doc["low_confidence"]:
        out += ["", "Low confidence (no tag written)"]
        out.append(_table(["scan", "file", "top 3"], [
            [r["scan_id"], r["path"], ", ".join(f"{g} {p:.2f}" for g, p in r["top"])] for r in doc["low_confidence"]]))
    if doc["failed"]:
        out += ["", "Failed"]
        out.append(_table(["scan", "file", "reason"], [[r["scan_id"], r["path"], r["reason"]] for r in doc["failed"]]))
    if doc["changes"]:
        out += ["", "Tag changes"]
        out.append(_table(["scan", "action", "file", "genre before", "genre after", "state"], [
            [r["scan_id"], r["action"], r["path"], "; ".join(r["before"]) or "-", "; ".join(r["after"]) or "-",
             r["state"]] for r in doc["changes"]]))
    return "\n".join(out)


def render_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)


def render_csv(doc: dict[str, Any]) -> str:
    """One CSV, one row per fact: ``section`` says which part of the report a row belongs to."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["section", "scan_id", "path", "genre", "value", "detail"])
    for sc in doc["scans"]:
        w.writerow(["scan", sc["id"], ";".join(sc["roots"]), "", sc["status"],
                    json.dumps({k: sc[k] for k in ("started_at", "found", "unchanged", "tagged", "low_confidence",
                                                   "kept_user_genre", "dry_run_predictions", "failed")})])
    for g in doc["genres"]:
        w.writerow(["genre", "", "", g["genre"], g["files"], ""])
    for r in doc["low_confidence"]:
        w.writerow(["low_confidence", r["scan_id"], r["path"], r["genre"], r["confidence"], json.dumps(r["top"])])
    for r in doc["failed"]:
        w.writerow(["failed", r["scan_id"], r["path"], "", r["kind"], r["reason"]])
    for r in doc["changes"]:
        w.writerow(["change", r["scan_id"], r["path"], ";".join(r["after"]), r["action"],
                    "before: " + ";".join(r["before"])])
    return buf.getvalue()


RENDERERS = {"table": render_table, "json": render_json, "csv": render_csv}
