"""The report as data: JSON (the document itself) and CSV (one row per fact)."""
from __future__ import annotations

import csv
import io
import json
from typing import Any

from tagger.report.collect import SCAN_COUNTS

def render_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)


CSV_HEADER = ["section", "scan_id", "path", "genre", "value", "detail"]


def render_csv(doc: dict[str, Any]) -> str:
    """One CSV, one row per fact: ``section`` says which part of the report a row belongs to.

    ``scan`` rows carry the scan's counts as JSON in ``detail``; ``confidence`` rows a bin
    (``detail`` is ``from-to``); ``file`` rows (``--files``) the genre written or kept, the outcome
    as ``value`` and the prediction as JSON in ``detail``; ``total`` rows the full length of a list
    (``path`` names it).
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for sc in doc["scans"]:
        w.writerow(["scan", sc["id"], ";".join(sc["roots"]), "", sc["status"],
                    json.dumps({k: sc[k] for k in ("started_at", "finished_at", "seconds", "dry_run", *SCAN_COUNTS,
                                                   "tags_written", "unreadable_paths", "mean_confidence")})])
    for g in doc["genres"]:
        w.writerow(["genre", "", "", g["genre"], g["files"], g["share"]])
    for b in doc["confidence"]["bins"]:
        w.writerow(["confidence", "", "", "", b["files"], f"{b['from']}-{b['to']}"])
    for r in doc["low_confidence"]:
        w.writerow(["low_confidence", r["scan_id"], r["path"], r["genre"], r["confidence"], json.dumps(r["top"])])
    for r in doc["failed"]:
        w.writerow(["failed", r["scan_id"], r["path"], "", r["kind"], r["reason"]])
    for r in doc["changes"]:
        w.writerow(["change", r["scan_id"], r["path"], ";".join(r["after"]), r["action"],
                    json.dumps({"before": r["before"], "state": r["state"], "at": r["at"]})])
    for r in doc.get("files", []):
        w.writerow(["file", r["scan_id"], r["path"], ";".join(r["genres"]), r["status"],
                    json.dumps({k: r[k] for k in ("confidence", "predicted", "top", "previous_genre", "model", "reason",
                                                  "error", "at")})])
    for name, n in doc["totals"].items():
        w.writerow(["total", "", name, "", n, "truncated" if name in doc["truncated"] else ""])
    return buf.getvalue()


