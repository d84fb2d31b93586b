"""What a scan was asked to do, declared once: how much of a track is heard, and the scan's options.

``Settings`` (tagger/config.py) takes its defaults from here; a scan's
``ScanOptions`` is built from the settings by ``ScanOptions.from_settings``,
stored with the scan (``to_record``) and read back, typed, by each job
(``from_record``). Pure standard library: the command line imports it before
anything heavy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from tagger.naming import Naming

#: below this calibrated confidence no tag is written
MIN_CONFIDENCE = 0.8


@dataclass(frozen=True)
class Hearing:
    """How much of a track the model hears (tagger/models/progressive.py says how).

    ``windows`` 3 s windows are planned, spread over the track; ``first`` of them
    are heard first (0: all at once), then ``step`` at a time (0: all the others)
    while the top probability is below ``stop`` and the model's best chance of
    being right (``Model.prospect``) is not below ``give_up`` (0: never give up).
    """

    windows: int = 10
    first: int = 3
    step: int = 2
    stop: float = 0.95  # the default model's card: early_stop
    give_up: float = 0.1  # the default model's card: give_up


@dataclass(frozen=True)
class ScanOptions:
    """A scan's options: what each of its jobs does with its file (``naming``: how the genres it
    writes are spelled, so that remote workers write what the scan was asked to)."""

    dry_run: bool = False
    force: bool = False
    retry_failed: bool = False  # analyse again unchanged files that failed for a fault of their own
    min_confidence: float = MIN_CONFIDENCE
    overwrite: bool = False
    model: str = ""  # empty: the default chain
    hearing: Hearing = field(default_factory=Hearing)
    naming: Naming = field(default_factory=Naming)

    @classmethod
    def from_settings(cls, settings: Any, *, dry_run: bool = False, force: bool = False,
                      retry_failed: bool = False) -> "ScanOptions":
        """The options of a scan started with ``settings`` (a ``tagger.config.Settings``)."""
        return cls(dry_run=dry_run, force=force, retry_failed=retry_failed, min_confidence=settings.min_confidence,
                   overwrite=settings.overwrite, model=settings.model, hearing=settings.hearing,
                   naming=settings.naming)

    def to_record(self) -> dict[str, Any]:
        """Plain JSON for the scan's row (``scans.options``)."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> "ScanOptions":
        """The options stored with a scan. Rows written before ``hearing`` was nested carry
        ``windows``, ``first_windows``, ``window_step`` and ``early_stop`` flat; missing keys
        take the defaults, but for ``give_up``, which is 0 (never) in rows made before it was."""
        record = dict(record or {})
        default = cls()
        nested = record.get("hearing")
        if isinstance(nested, Mapping):
            known = {f.name for f in fields(Hearing)}
            # a scan recorded before give_up existed heard every window it was unsure of
            hearing = Hearing(**{"give_up": 0.0, **{k: v for k, v in nested.items() if k in known}})
        else:
            h = default.hearing
            hearing = Hearing(int(record.get("windows") or h.windows), int(record.get("first_windows", h.first)),
                              int(record.get("window_step", h.step)), float(record.get("early_stop", h.stop)),
                              0.0 if record else h.give_up)
        n = record.get("naming") if isinstance(record.get("naming"), Mapping) else {}
        naming = Naming(tuple((str(a), str(b)) for a, b in n.get("names", ())),
                        tuple(str(g) for g in n.get("only", ())), str(n.get("separator", "")))
        return cls(dry_run=bool(record.get("dry_run", default.dry_run)), force=bool(record.get("force", default.force)),
                   retry_failed=bool(record.get("retry_failed", False)),
                   min_confidence=float(record.get("min_confidence", default.min_confidence)),
                   overwrite=bool(record.get("overwrite", default.overwrite)),
                   model=str(record.get("model") or ""), hearing=hearing, naming=naming)
