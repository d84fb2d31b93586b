"""The report for a terminal: aligned columns, coloured on a TTY."""
from __future__ import annotations

from typing import Any

from tagger.report.collect import ALL_LISTS, LISTS
from tagger.report.words import OUTCOME_WORDS, SECTION_TITLES, candidates, duration, printable, truncation_notes

def _table(headers: list[str], rows: list[list[Any]], style=None) -> str:
    """Aligned columns; ``style(row_index, col_index, padded_text)`` may colour a padded cell."""
    cells = [[printable(c if c is not None else "-") for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(r, ri=None):
        out = [c.ljust(w) if i < len(r) - 1 else c for i, (c, w) in enumerate(zip(r, widths))]
        while out and not out[-1].strip():  # trailing blank cells: no trailing spaces, coloured or not
            out.pop()
        if style is not None:
            out = [style(ri, i, c) for i, c in enumerate(out)]
        return "  ".join(out).rstrip()

    head = line(headers, -1)
    return "\n".join([head, "  ".join("-" * w for w in widths)] + [line(r, i) for i, r in enumerate(cells)])


def render_table(doc: dict[str, Any], color: bool = False) -> str:
    """The report for a terminal; ``color`` adds ANSI colours (only for a TTY)."""
    import click

    def st(text: str, **kw) -> str:
        return click.style(text, **kw) if color else text

    def title(text: str) -> str:
        return st(text, bold=True, underline=True)

    def status_style(columns: dict[int, str]):
        def style(ri, ci, text):
            if ri == -1:
                return st(text, bold=True)
            return st(text, fg=columns[ci]) if ci in columns and text.strip() not in ("0", "-") else text
        return style

    notes = truncation_notes(doc)
    f = doc["report"]["filters"]
    active = [f"{k}={v}" for k, v in f.items() if v and k != "lists"]
    narrowed = [x for x in f["lists"] if x in LISTS]  # the files list is an addition, not a narrowing
    if narrowed != list(LISTS):
        active.append("lists=" + ",".join(narrowed or f["lists"]))
    out = [st("tagger report", bold=True) + f"  generated {doc['report']['generated_at']}"
           + (f"  filters: {' '.join(active)}" if active else "")]

    latest, lib = doc["summary"]["latest_scan"], doc["summary"]["library"]
    out += ["", title("Summary")]
    if latest:
        out.append(f"latest scan #{latest['id']} ({latest['status']}, started {latest['started_at']}"
                   + (f", took {duration(latest['seconds'])}" if latest["seconds"] is not None else "") + ")"
                   + ("  dry run" if latest["dry_run"] else ""))
        out.append("  ".join([f"found {latest['found']}", f"unchanged {latest['unchanged']}",
                              st(f"tagged {latest['tagged']}", fg="green"),
                              st(f"low confidence {latest['low_confidence']}", fg="yellow"),
                              f"kept {latest['kept_user_genre']}", f"dry run {latest['dry_run_predictions']}",
                              st(f"failed {latest['failed']}", fg="red" if latest["failed"] else None),
                              f"pending {latest['pending']}"]))
    else:
        out.append("(no scans yet)")
    out.append(f"library: {lib['files']} files known, {lib['tagged_files']} tagged by tagger, {lib['genres']} genres")

    out += ["", title("Scans")]
    if doc["scans"]:
        cols = ["id", "started", "status", "found", "unchanged", "tagged", "low conf.", "kept", "dry run", "failed",
                "written", "mean conf.", "roots"]
        out.append(_table(cols, [
            [sc["id"], sc["started_at"], sc["status"], sc["found"], sc["unchanged"], sc["tagged"],
             sc["low_confidence"], sc["kept_user_genre"], sc["dry_run_predictions"], sc["failed"],
             sc["tags_written"], f"{sc['mean_confidence']:.2f}" if sc["mean_confidence"] is not None else "-",
             ", ".join(sc["roots"])] for sc in doc["scans"]], status_style({5: "green", 6: "yellow", 9: "red"})))
        if "scans" in notes:
            out.append(notes["scans"])
    else:
        out.append("(no scans)")

    basis = ("library: written by tagger or the user's, kept" if doc["report"]["genres_basis"] == "library"
             else "predictions in the scans shown, written or not")
    out += ["", title(f"Genres ({basis})")]
    if doc["genres"]:
        top = max(g["files"] for g in doc["genres"])
        out.append(_table(["genre", "files", "share", ""], [
            [g["genre"], g["files"], f"{100 * g['share']:.1f}%", "█" * max(1, round(30 * g["files"] / top))]
            for g in doc["genres"]], lambda ri, ci, t: st(t, fg="cyan") if ci == 3 and ri != -1 else
            (st(t, bold=True) if ri == -1 else t)))
    else:
        out.append("(none)")

    conf = doc["confidence"]
    out += ["", title("Confidence")]
    if conf["predictions"]:
        out.append(f"{conf['predictions']} predictions, mean {conf['mean']:.2f} (min {conf['min']:.2f}, "
                   f"max {conf['max']:.2f})" + (f", tags written from {doc['report']['min_confidence']}"
                                                if doc["report"]["min_confidence"] is not None else ""))
        top = max(b["files"] for b in conf["bins"]) or 1
        threshold = doc["report"]["min_confidence"]
        out.append(_table(["confidence", "files", ""], [
            [f"{b['from']:.1f}–{b['to']:.1f}", b["files"], "█" * round(30 * b["files"] / top)] for b in conf["bins"]],
            lambda ri, ci, t: (st(t, bold=True) if ri == -1 else st(t, fg="yellow" if threshold is not None and
                                                                    conf["bins"][ri]["to"] <= threshold else "cyan")
                               if ci == 2 else t)))
    else:
        out.append("(no predictions)")

    if "low_confidence" in f["lists"]:
        out += ["", title(SECTION_TITLES["low_confidence"])]
        out.append(_table(["scan", "file", "genre", "conf.", "top 3 / reason"], [
            [r["scan_id"], r["path"], r["genre"], f"{r['confidence']:.2f}",
             r["reason"] or candidates(r["top"])] for r in doc["low_confidence"]],
            status_style({3: "yellow"})) if doc["low_confidence"] else "(none)")
    if "failed" in f["lists"]:
        out += ["", title(SECTION_TITLES["failed"])]
        out.append(_table(["scan", "file", "kind", "reason"], [
            [r["scan_id"], r["path"], r["kind"], r["reason"]] for r in doc["failed"]],
            status_style({2: "red"})) if doc["failed"] else "(none)")
    if "changes" in f["lists"]:
        out += ["", title(SECTION_TITLES["changes"])]
        out.append(_table(["scan", "action", "file", "genre before", "genre after", "state", "at"], [
            [r["scan_id"], r["action"], r["path"], "; ".join(r["before"]) or "-", "; ".join(r["after"]) or "-",
             r["state"], r["at"]] for r in doc["changes"]]) if doc["changes"] else "(none)")
    colours = {"tagged": "green", "kept": "blue", "low_confidence": "yellow", "failed": "red"}

    def outcome_style(ri, ci, text):
        if ri == -1:
            return st(text, bold=True)
        return st(text, fg=colours.get(doc["files"][ri]["status"])) if ci == 2 else text

    if "files" in f["lists"]:
        out += ["", title(SECTION_TITLES["files"])]
        out.append(_table(["scan", "file", "outcome", "genre", "conf.", "candidates (low) / reason"], [
            [r["scan_id"], r["path"], OUTCOME_WORDS.get(r["status"], r["status"]), "; ".join(r["genres"]) or "-",
             f"{r['confidence']:.2f}" if r["confidence"] is not None else "-", _file_note(r)]
            for r in doc["files"]], outcome_style) if doc["files"] else "(none)")
    for name in ALL_LISTS:
        if name in notes:
            out.append(f"{SECTION_TITLES[name]}: {notes[name]}")
    return "\n".join(out)


def _file_note(r: dict[str, Any]) -> str:
    """The files list's last column: the candidates of an unsure prediction, what a kept genre
    was predicted as, a failure's reason."""
    if r["status"] == "low_confidence":
        return r["reason"] or candidates(r["top"])
    if r["status"] in ("kept", "dry_run") and r["predicted"]:
        return f"predicted {r['predicted']} {r['confidence']:.2f}"
    if r["status"] == "failed":
        return (r["error"] or {}).get("reason") or ""
    return ""


