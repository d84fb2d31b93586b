"""What every text rendering of the report shares: section titles, safe text, durations, cut-list notes."""
from __future__ import annotations

import re
from typing import Any, Optional

from tagger.report.collect import ALL_LISTS

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: Any) -> str:
    """A path or reason for display on one line: control characters (a newline in a file name) escaped."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def truncation_notes(doc: dict[str, Any]) -> dict[str, str]:
    """``{list name: "showing N of M (--limit)"}`` for every list cut at the limit."""
    shown = {"scans": len(doc["scans"]), **{name: len(doc.get(name, [])) for name in ALL_LISTS}}
    return {name: f"showing {shown[name]} of {doc['totals'][name]} (raise --limit for more)"
            for name in doc["truncated"]}


def duration(seconds: Optional[float]) -> str:
    """``42 s``, ``12 min``, ``3.5 h``; ``–`` when unknown."""
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


SECTION_TITLES = {"scans": "Scans", "low_confidence": "Low confidence (no tag written)", "failed": "Failed",
                  "changes": "Tag changes", "files": "Files (genre written or kept)"}

#: a file's outcome in words (the files list)
OUTCOME_WORDS = {"tagged": "tagged", "kept": "kept", "low_confidence": "low confidence", "dry_run": "dry run",
                 "failed": "failed"}


def candidates(top: list) -> str:
    """``jazz 0.52, blues 0.31``: a prediction's top candidates."""
    return ", ".join(f"{g} {p:.2f}" for g, p in top)


