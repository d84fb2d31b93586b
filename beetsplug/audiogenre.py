"""audiogenre: tagger's genres for beets, heard from the audio (``beet audiogenre QUERY``; on import
with ``auto: yes``).

A thin layer over tagger's library, as tagger's own command line is: ``tagger.pipeline.predict_path``
hears a file as a scan hears it (the default chain, the first windows and more only while unsure),
``tagger.pipeline.decide`` applies a scan's rules (below ``min_confidence`` nothing is written; a
genre the user set is kept unless ``--force``; off ``genres_only`` is nothing), and the genres are
spelled as tagger writes them (``tagger.naming``). They are written through beets' own fields:
``genres`` beside ``tagger_confidence`` and ``tagger_model``, media fields stored where tagger stores
them (``TXXX:TAGGER_MODEL``, ``TAGGER_MODEL``, ``----:com.apple.iTunes:TAGGER_MODEL``; the one field
table, ``tagger.tags.FIELD_TABLE``), so ``item.store()`` and ``item.try_write()`` keep beets' database
and the files in agreement, and ``tagger scan`` later sees the genre as tagger's.

beets loads its plugins for every command: nothing heavy is imported until a file is heard.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import mediafile
from beets import ui
from beets.dbcore import types
from beets.plugins import BeetsPlugin

from tagger.tags.fields import FIELD_TABLE

if TYPE_CHECKING:
    from beets.library import Item

    from tagger.config import Settings
    from tagger.options import ScanOptions

#: beets' field -> tagger's field of the same meaning
BEETS_FIELDS = {"genres": "genre", "tagger_confidence": "confidence", "tagger_model": "model"}

#: at most this many not-tagged items listed after an import (``beet audiogenre QUERY`` says each again)
IMPORT_LINES = 50

#: an outcome's label, as ``tagger scan -v`` labels a file's
LABELS = {"tagged": "tagged", "would_tag": "would tag", "unchanged": "unchanged", "kept": "kept",
          "low_confidence": "low confidence", "failed": "failed"}


def _media_field(field: str, **style) -> mediafile.MediaField:
    """tagger's ``field`` as a MediaField: the same frame, comment and atom tagger reads and writes."""
    keys = FIELD_TABLE[field]
    return mediafile.MediaField(
        mediafile.MP3DescStorageStyle(keys["id3"].removeprefix("TXXX:"), **style),  # also WAV, AIFF
        mediafile.MP4StorageStyle(keys["mp4"], **style),
        mediafile.StorageStyle(keys["vorbis"], **style),
        mediafile.ASFStorageStyle(keys["vorbis"], **style),
        out_type=float if style else str,
    )


@dataclass
class Outcome:
    """What hearing one item gave: ``status`` (a key of LABELS) and what it means, in words."""

    item: "Item"
    status: str
    detail: str

    def line(self) -> str:
        from tagger.report.words import printable

        # as beets names an item (format_item), or by its path when it has no title to show
        name = format(self.item) if self.item.get("title") else os.fsdecode(self.item.path)
        return f"{LABELS[self.status]:<14} {printable(name)}: {printable(self.detail)}"


def _values(values) -> str:
    return "; ".join(values or []) or "-"


class AudioGenrePlugin(BeetsPlugin):
    # absent stays None (beets' STRING would read a file without the field as "", and write that
    # back as an empty Vorbis comment, which would make the user's genre look like tagger's)
    item_types = {"tagger_confidence": types.NullFloat(3)}

    def __init__(self) -> None:
        super().__init__()
        # null: tagger's own setting (its config file, TAGGER_* environment); see tagger.config
        self.config.add({"auto": False, "force": False, "min_confidence": None, "model": ""})
        # three decimals, as tagger writes the confidence
        self.add_media_field("tagger_confidence", _media_field("confidence", float_places=3))
        self.add_media_field("tagger_model", _media_field("model"))
        self._lock = threading.Lock()
        self._hearing: dict[bool, tuple["Settings", "ScanOptions"]] = {}
        self._imported: list[Outcome] = []
        self._to_write: set[int] = set()
        if self.config["auto"].get(bool):
            self.import_stages = [self.imported]
            self.register_listener("import_task_files", self.write_imported)
            self.register_listener("import", self.import_summary)

    # ------------------------------------------------------------ tagger's side
    def hearing(self, force: bool = False) -> tuple["Settings", "ScanOptions"]:
        """tagger's settings and a scan's options, built once: defaults ← tagger's config file ←
        ``TAGGER_*`` ← this plugin's config (min_confidence, model, force)."""
        force = force or self.config["force"].get(bool)
        with self._lock:
            if force not in self._hearing:
                from tagger import config
                from tagger.errors import ConfigError
                from tagger.models import runtime
                from tagger.options import ScanOptions

                overrides = {"min_confidence": self.config["min_confidence"].get(),
                             "model": self.config["model"].get() or None,
                             "overwrite": True if force else None}  # else tagger's overwrite setting
                try:
                    settings = config.load(overrides)
                except ConfigError as exc:
                    raise ui.UserError(f"audiogenre: {exc}") from None
                runtime.set_precision(settings.precision)  # before the first model loads
                runtime.set_runtime(settings.runtime)
                runtime.set_student(settings.student)
                self._hearing[force] = settings, ScanOptions.from_settings(settings)
            return self._hearing[force]

    def hear(self, item: "Item", force: bool = False) -> Outcome:
        """Hear ``item``'s file and decide as a scan decides; sets the item's fields when it would
        write them, stores and writes nothing."""
        from tagger import pipeline, record
        from tagger.errors import ModelMissing, TaggerError
        from tagger.report.words import candidates

        settings, options = self.hearing(force)
        current = {"genre": list(item.get("genres") or []),
                   "model": [item["tagger_model"]] if item.get("tagger_model") else []}
        if record.is_users_genre(current) and not options.overwrite:
            # nothing a prediction could change: not worth hearing
            return Outcome(item, "kept", f"kept the user's genre {_values(current['genre'])} (--force replaces it)")
        try:
            prediction, _ = pipeline.predict_path(os.fsdecode(item.path), settings)
        except ModelMissing as exc:
            raise ui.UserError(f"audiogenre: {exc}") from None
        except TaggerError as exc:  # the file's fault: unreadable, not audio, gone
            return Outcome(item, "failed", exc.message)
        except Exception as exc:  # noqa: BLE001 - a defect, not the file's fault: say so, go on with the rest
            self._log.debug("audiogenre: {}", exc, exc_info=True)
            return Outcome(item, "failed", f"internal error: {type(exc).__name__}: {exc}")
        decision = pipeline.decide(prediction, current, options)  # beets stores genres as a list
        if decision.action == pipeline.KEEP:
            return Outcome(item, "kept", f"kept the user's genre {_values(current['genre'])} "
                                         f"(predicted {prediction.genre} {prediction.confidence:.2f})")
        if decision.action == pipeline.LOW_CONFIDENCE:
            if prediction.reason:  # does not sound like music: the candidates would mislead
                return Outcome(item, "low_confidence", f"no genre, {prediction.reason}")
            why = ("not sure enough" if prediction.confidence < options.min_confidence
                   else f"{prediction.genre} is not in genres_only")
            return Outcome(item, "low_confidence", f"no genre, {why}: {candidates(prediction.top[:3])}")
        before = {f: list(item.get("genres") or []) if f == "genres" else item.get(f) for f in BEETS_FIELDS}
        item.genres = decision.fields["genre"]
        item["tagger_confidence"] = float(decision.fields["confidence"][0])
        item["tagger_model"] = decision.fields["model"][0]
        after = {f: list(item.genres) if f == "genres" else item.get(f) for f in BEETS_FIELDS}
        if after == before:
            return Outcome(item, "unchanged", f"already {_values(item.genres)} ({prediction.confidence:.2f})")
        was = f", was {_values(before['genres'])}" if before["genres"] else ""
        return Outcome(item, "tagged", f"{_values(item.genres)} ({prediction.confidence:.2f}){was}")

    # ------------------------------------------------------------ beet audiogenre QUERY
    def commands(self) -> list[ui.Subcommand]:
        cmd = ui.Subcommand("audiogenre", help="hear each item's genre with tagger and write it")
        cmd.parser.add_option("-p", "--pretend", "--dry-run", dest="pretend", action="store_true",
                              help="say what would be written, write nothing")
        cmd.parser.add_option("-f", "--force", dest="force", action="store_true",
                              help="replace a genre the user set (one without tagger's model field)")
        cmd.func = self.command
        return [cmd]

    def command(self, lib, opts, args) -> None:
        write = ui.should_write()
        counts: dict[str, int] = {}
        for item in lib.items(args):
            outcome = self.hear(item, force=bool(opts.force))
            if outcome.status == "tagged":
                if opts.pretend:
                    outcome.status = "would_tag"
                else:
                    item.store()
                    if write:
                        item.try_write()
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            ui.print_(outcome.line())
        ui.print_(_summary(counts, pretend=bool(opts.pretend)))

    # ------------------------------------------------------------ on import (auto: yes)
    def imported(self, session, task) -> None:
        """An import stage: hear the task's items, store what is decided (the importer reloads its
        items from the database after each stage); the files are written once they are in place."""
        for item in task.imported_items():
            outcome = self.hear(item)
            self._log.info("{}", outcome.line())
            if outcome.status == "tagged":
                item.store()
                with self._lock:
                    self._to_write.add(item.id)
            with self._lock:
                self._imported.append(outcome)

    def write_imported(self, session, task) -> None:
        """After the importer copied, moved and wrote the task's files: write ours into them too (an
        as-is import writes no tags of its own), when beets writes tags on import."""
        for item in task.imported_items():
            with self._lock:
                ours = item.id in self._to_write
                self._to_write.discard(item.id)
            if ours and session.config["write"].get(bool):
                item.try_write()

    def import_summary(self, lib, paths) -> None:
        with self._lock:
            outcomes, self._imported = self._imported, []
        if not outcomes:
            return
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        ui.print_(_summary(counts))
        untagged = [o for o in outcomes if o.status in ("low_confidence", "failed")]
        for o in untagged[:IMPORT_LINES]:
            ui.print_("  " + o.line())
        if len(untagged) > IMPORT_LINES:
            ui.print_(f"  … and {len(untagged) - IMPORT_LINES} more (beet audiogenre QUERY says each again)")


def _summary(counts: dict[str, int], pretend: bool = False) -> str:
    words = {"tagged": "tagged", "would_tag": "would be tagged", "unchanged": "unchanged",
             "kept": "kept the user's genre", "low_confidence": "low confidence (no genre written)",
             "failed": "failed"}
    total = sum(counts.values())
    parts = [f"{counts[k]} {w}" for k, w in words.items() if counts.get(k)]
    head = f"audiogenre: {total} item{'s' if total != 1 else ''}"
    return head + (": " + ", ".join(parts) if parts else "") + ("; pretend: nothing written" if pretend else "")
