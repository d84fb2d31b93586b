"""tagger's fields and how each tag family stores them: the field table, one class per family.

Each logical field is declared once with its storage in every tag family
(:data:`FIELD_TABLE`); a format's family is its record's ``tag_family``
(tagger/formats.py). The three families (:class:`_ID3`, :class:`_Vorbis`,
:class:`_MP4`) implement the same small interface; nothing above them
branches on the format. See tagger/tags/__init__.py for what each can store.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

from tagger import formats
from tagger.errors import UnsupportedFormat
from tagger.naming import JOIN
from tagger.tags import riff
from tagger.tags.payload import id3_losses, id3_tag_bytes

#: the logical fields tagger owns, in a stable order
FIELDS = ("genre", "confidence", "model")

#: field -> its key in each tag family. ID3 "TXXX:<desc>" is a user text frame,
#: MP4 "----:<mean>:<name>" a freeform atom; Vorbis comment keys are case-insensitive.
FIELD_TABLE: dict[str, dict[str, str]] = {
    "genre": {"id3": "TCON", "vorbis": "GENRE", "mp4": "\xa9gen"},
    "confidence": {"id3": "TXXX:TAGGER_CONFIDENCE", "vorbis": "TAGGER_CONFIDENCE",
                   "mp4": "----:com.apple.iTunes:TAGGER_CONFIDENCE"},
    "model": {"id3": "TXXX:TAGGER_MODEL", "vorbis": "TAGGER_MODEL",
              "mp4": "----:com.apple.iTunes:TAGGER_MODEL"},
}

#: the fields a player may show as the genre, the first that holds one: the genre field, else a
#: WAV's RIFF INFO genre (which only a WAV has; see _RiffID3)
SHOWN_GENRE = ("genre", "info_genre")


def _digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


# ---------------------------------------------------------------- tag families
class _Family:
    """How one tag family stores a key: get, put, drop; what else it holds; how to save."""

    name: str
    #: whether players read several values of one field (for several genres): Vorbis comments
    #: yes; ID3 and MP4 players (FFmpeg's among them) show the first only
    lists_values: bool = False
    #: fields only this family stores, besides FIELDS: field -> its key
    extra: dict[str, str] = {}

    def key(self, field: str) -> str:
        return self.extra.get(field) or FIELD_TABLE[field][self.name]

    def fields(self, f: Any) -> dict[str, list[str]]:
        """Our fields as the opened file holds them (``[]`` when absent)."""
        if f.tags is None:
            return {field: [] for field in FIELDS}
        return {field: self.get(f.tags, FIELD_TABLE[field][self.name]) for field in FIELDS}

    def stored(self, values: dict[str, list[str]]) -> dict[str, list[str]]:
        """``values`` with what this family stores a second time (a WAV's genre, in its INFO list)."""
        return values

    def change(self, f: Any, changes: dict[str, list[str]]) -> None:
        """Set each field of ``changes`` (``[]``: remove it) in the opened file ``f``, and save it."""
        if f.tags is None:
            f.add_tags()
        for field, values in changes.items():
            if values:
                self.put(f.tags, self.key(field), values)
            else:
                self.drop(f.tags, self.key(field))
        self.save(f)

    def get(self, tags: Any, key: str) -> list[str]:
        raise NotImplementedError

    def put(self, tags: Any, key: str, values: list[str]) -> None:
        raise NotImplementedError

    def drop(self, tags: Any, key: str) -> None:
        raise NotImplementedError

    def cannot_store(self, key: str, value: str) -> str | None:
        """Why ``value`` cannot be stored under ``key`` and read back as itself (``None``: it can)."""
        return None

    def others(self, f: Any) -> list[tuple[str, str]]:
        """Every tag that is not ours, as (key, digest of the value), in a stable order."""
        raise NotImplementedError

    def would_lose(self, path: Path, fmt: str) -> str | None:
        """What stored in the file a rewrite would drop without :meth:`others` seeing it (``None``: nothing)."""
        return None

    def save(self, f: Any) -> None:
        f.save()


class _ID3(_Family):
    """ID3v2 frames: text frames by id (``TCON``), user text frames as ``TXXX:<desc>``."""

    name = "id3"

    def get(self, tags, key):
        return [str(t) for frame in tags.getall(key) for t in frame.text]

    def put(self, tags, key, values):
        from mutagen import id3

        tags.delall(key)
        if key.startswith("TXXX:"):
            tags.add(id3.TXXX(encoding=id3.Encoding.UTF8, desc=key[5:], text=list(values)))
        elif key == "TCON":
            tags.add(id3.TCON(encoding=id3.Encoding.UTF8, text=[self._escape_genre(v) for v in values]))
        else:
            tags.add(getattr(id3, key)(encoding=id3.Encoding.UTF8, text=list(values)))

    def drop(self, tags, key):
        tags.delall(key)

    @staticmethod
    def _escape_genre(value: str) -> str:
        # mutagen reads "(17)..." as a numeric ID3v1 genre reference and
        # "((..." as an escaped "(": doubling a leading "(" keeps it literal
        return "(" + value if value.startswith("(") else value

    def cannot_store(self, key, value):
        if "\x00" in value:  # NUL separates the values of a multi-value text frame
            return "ID3 text cannot contain NUL characters"
        if value == "":
            return "ID3 drops empty text values"
        if key == "TCON":
            from mutagen.id3 import TCON

            # mutagen turns genre text into genre names when it loads a tag
            # ("17" -> "Rock", "CR" -> "Cover", text after a line break dropped)
            back = TCON(encoding=3, text=[self._escape_genre(value)]).genres
            if back != [value]:
                return f"ID3 reads this genre back as {back!r}"
        return None

    def others(self, f):
        if f.tags is None:
            return []
        ours = {FIELD_TABLE[k]["id3"] for k in FIELDS}
        items = sorted((key, _digest(repr(frame))) for key, frame in f.tags.items() if key not in ours)
        # frames mutagen does not parse but keeps as they are stored (unknown ids, encrypted frames)
        unknown = sorted(bytes(data) for data in getattr(f.tags, "unknown_frames", []))
        if unknown:
            items.append(("<id3 unknown frames>", _digest(unknown)))
        # the version only matters when there are frames it applies to
        return [("<id3 version>", _digest(f.tags.version))] + items if items else []

    def would_lose(self, path, fmt):
        raw = id3_tag_bytes(path, fmt)
        return None if raw is None else id3_losses(raw)

    def save(self, f):
        # Keep the file's ID3 version (v2.3 stays v2.3 for old players). mutagen
        # holds frames as v2.4 in memory and converts back; v23_sep=None keeps
        # multiple values NUL-separated, as mutagen reads them, instead of
        # joining them with "/" (which would not read back as the same list).
        version = 3 if f.tags.version[:2] == (2, 3) else 4
        f.save(v2_version=version, v23_sep=None)


class _RiffID3(_ID3):
    """A WAV file: ID3 frames in its ``id3 `` chunk, as for MP3, and the genre a second time in its
    RIFF INFO list (``IGNR``, tagger/tags/riff.py), which ffprobe (whose INFO genre wins over the
    ID3 chunk's), Windows and many players read. The INFO genre is a field of its own,
    ``info_genre``, so that what the file held there is recorded and an undo gives it back."""

    extra = {"info_genre": "IGNR"}

    def fields(self, f):
        info = riff.read(f.filename)
        return {**super().fields(f), **{field: info.get(cid, []) for field, cid in self.extra.items()}}

    def stored(self, values):
        if "genre" not in values or "info_genre" in values:
            return values
        genre = values["genre"]
        return {**values, "info_genre": [JOIN.join(genre)] if genre else []}

    def cannot_store(self, key, value):
        if key in self.extra.values():
            return "RIFF INFO text cannot contain NUL characters" if "\x00" in value else None
        return super().cannot_store(key, value)

    def change(self, f, changes):
        in_id3 = {k: v for k, v in changes.items() if k not in self.extra}
        if in_id3:
            super().change(f, in_id3)
        for field, cid in self.extra.items():
            if field in changes:
                riff.write(f.filename, cid, changes[field])

    def others(self, f):
        return super().others(f) + riff.others(f.filename, skip=set(self.extra.values()))


class _Vorbis(_Family):
    """Vorbis comments (FLAC, Ogg Vorbis, Opus): KEY=value pairs, keys case-insensitive."""

    name = "vorbis"
    lists_values = True

    def get(self, tags, key):
        return list(tags[key]) if key in tags else []

    def put(self, tags, key, values):
        tags[key] = list(values)

    def drop(self, tags, key):
        if key in tags:
            del tags[key]

    def save(self, f):
        from mutagen.ogg import OggFileType

        if isinstance(f, OggFileType):
            # No new padding in an Ogg comment packet: mutagen cuts the header packets it
            # rewrites into pages of 4 KiB, and its default padding (1 KiB and 0.1 % of the
            # file) makes more header pages than the encoder wrote, whereupon it renumbers
            # every page of the file in Python (60 ms for 5 minutes of Ogg Vorbis).
            f.save(padding=_no_new_padding)
        else:
            f.save()

    def others(self, f):
        ours = {FIELD_TABLE[k]["vorbis"].upper() for k in FIELDS}
        out: list[tuple[str, str]] = []
        if f.tags is not None:
            out.append(("<vendor>", _digest(f.tags.vendor)))
            # order matters in a comment list; ours are dropped and re-appended,
            # which keeps the others in their order
            out += [(k.upper(), _digest(v)) for k, v in f.tags if k.upper() not in ours]
        for i, p in enumerate(getattr(f, "pictures", [])):
            out.append((f"<picture {i}>", _digest(p.type, p.mime, p.desc, p.width, p.height,
                                                  p.depth, p.colors, p.data)))
        for block in getattr(f, "metadata_blocks", []):
            # seek tables, cue sheets, application blocks; not padding or the comments
            if block.code not in (1, 4, 6):
                out.append((f"<flac block {block.code}>", _digest(block.write())))
        return out


def _no_new_padding(info: Any) -> int:
    """mutagen's padding callback: keep the padding there is, add none."""
    return max(info.padding, 0)


class _MP4(_Family):
    """MP4 ``ilst`` atoms: text atoms (``\\xa9gen``), freeform ``----:mean:name`` atoms as UTF-8."""

    name = "mp4"

    def get(self, tags, key):
        vals = tags.get(key, [])
        if key.startswith("----:"):
            return [bytes(v).decode("utf-8", "replace") for v in vals]
        return [str(v) for v in vals]

    def put(self, tags, key, values):
        if key.startswith("----:"):
            from mutagen.mp4 import AtomDataType, MP4FreeForm

            tags[key] = [MP4FreeForm(v.encode("utf-8"), dataformat=AtomDataType.UTF8) for v in values]
        else:
            tags[key] = list(values)

    def drop(self, tags, key):
        tags.pop(key, None)

    def others(self, f):
        if f.tags is None:
            return []
        ours = {FIELD_TABLE[k]["mp4"] for k in FIELDS}
        return sorted((k, _digest([(type(v).__name__, v, getattr(v, "imageformat", None),
                                    getattr(v, "dataformat", None)) for v in vals]))
                      for k, vals in f.tags.items() if k not in ours)


FAMILIES: dict[str, _Family] = {"id3": _ID3(), "riff": _RiffID3(), "vorbis": _Vorbis(), "mp4": _MP4()}


# ---------------------------------------------------------------- lookups
def family_of(fmt: str) -> "_Family":
    """The tag family a format's files use (its record's ``tag_family``)."""
    try:
        return FAMILIES[formats.record(fmt).tag_family]
    except KeyError:
        raise UnsupportedFormat(f"tagger cannot tag {fmt!r} files") from None


def opener(fmt: str) -> Callable[[str], Any]:
    """The mutagen class that opens a format's files for tagging (its record's ``mutagen``)."""
    import importlib

    module, cls = formats.record(fmt).mutagen.split(":")
    return getattr(importlib.import_module(module), cls)


def keys_of(family: "_Family") -> list[tuple[str, str]]:
    """(field, key) of every field the family stores: FIELDS, then its own."""
    return [(field, family.key(field)) for field in (*FIELDS, *family.extra)]


def fields_of(family: "_Family", f: Any) -> dict[str, list[str]]:
    return family.fields(f)


def lists_genres(fmt: str) -> bool:
    """Whether players read several values of a format's genre field (Vorbis comments), so several
    genres are written as several values; elsewhere (ID3, MP4) they are joined into one."""
    return family_of(fmt).lists_values


def stored(fmt: str, values: dict[str, list[str]]) -> dict[str, list[str]]:
    """The fields a write of ``values`` gives a file of format ``fmt``: ``values`` and what the format
    keeps a second time (a WAV's genre, in its RIFF INFO list: ``info_genre``). What a scan writes."""
    return family_of(fmt).stored(values)


def shown_genre(fields: dict[str, list[str]]) -> list[str]:
    """The genre a player shows from a file's fields: its genre field, else a WAV's INFO genre."""
    for field in SHOWN_GENRE:
        if fields.get(field):
            return list(fields[field])
    return []


def holds(current: dict[str, list[str]], recorded: dict[str, list[str]]) -> bool:
    """Whether a file's fields (``current``, as read) hold what a change recorded. A field the record
    does not name (one an older tagger did not keep: a WAV's INFO genre) is not compared; that write
    left it alone."""
    return all(list(current.get(field, [])) == list(values) for field, values in recorded.items())


