"""Writing tagger's fields into audio files: one field table, verified, crash-safe writes.

The field table
---------------
Each logical field is declared once with its storage in every tag family
(:data:`FIELD_TABLE`); :data:`FAMILY_OF` says which family a format uses.
The three families below the table (:class:`_ID3`, :class:`_Vorbis`,
:class:`_MP4`) implement the same small interface; nothing above them
branches on the format.

Write safety (see :func:`write`)
--------------------------------
1. ``expect``: a file whose size or mtime differs from what the analysis saw
   raises :class:`~tagger.errors.FileChanged` and is not written. Neither is
   a file whose ID3 tag holds frames mutagen cannot read (a text encoding
   byte that is not 0-3, bytes that are no frame, an id that is not one) or
   reads and would not write back (ID3v2.3 ``RVAD``/``EQUA``/``TRDA``/``TSIZ``,
   unknown ID3v2.2 frames): mutagen drops those silently, the read-back of
   step 3 cannot see it and undo could not restore them, so the stored
   frames are walked and such a file raises :class:`UnreadableFrames`
   (permanent), its bytes unchanged.
2. The tags are written into a copy in the same directory (a hidden
   ``.<name>.tagger-XXXXXXXX.tmp`` file, the name's start cut to fit 255
   bytes), never into the original.
3. The copy is verified by reading it back: our fields hold exactly the
   values meant, every other tag (frames, comments, atoms, pictures) is
   unchanged, and :func:`audio_fingerprint` of the audio payload is unchanged.
4. The copy is flushed to disk, gets the original's permission bits (and
   owner and group when the process may set them), and ``os.replace``
   moves it onto the original in one atomic step, followed by an fsync of
   the directory. A process killed at any moment leaves the original as it
   was or fully written; at worst a stray ``.<name>.tagger-XXXXXXXX.tmp``
   file remains, which the next scan walking the folder removes once it is
   an hour old (:func:`remove_stale_temps`).

mtime policy: a written file's mtime is the time of the write, because its
content changed (backup and sync tools rely on that). The stat after the
write is returned in :attr:`WriteResult.stat` so the caller can record it and
a later scan sees the file as unchanged. A write that changes nothing does
not touch the file at all.

A symlink is followed: the file it points to is replaced and the link stays.
A file with several hard links is refused (replacing it would split the
links, leaving the other names with the old content). A file without write
permission bits, or in a directory that cannot be written, is refused with a
:class:`~tagger.errors.TagWriteError`, even for root: read-only is taken as
the user's intent.

Undo is ``write(path, fmt, previous)`` with the values :func:`read` returned
before: a field that was absent is given ``[]`` and so removed. One limit:
an ID3 genre frame whose text mutagen reads as no genre at all (a text that
starts with a line break) reads as ``[]``; if we write a genre, undo removes
that empty frame rather than recreating it.

Audio payload fingerprint
-------------------------
:func:`audio_fingerprint` hashes the bytes of the encoded audio, not decoded
samples: it is exact, needs no decoder, and costs one read of the file.
What counts as the payload, per format: MP3 - everything between the ID3v2
tag(s) and a trailing ID3v1 tag; FLAC - STREAMINFO and every byte after the
last metadata block; Ogg Vorbis/Opus - every packet except the comment
header, with the granule positions of the audio pages (mutagen re-pages the
headers, so page bytes and CRCs may change while packets may not); MP4 - the
sample description, timing table and every sample of the sound tracks read
through the chunk offset table (so moved audio with rewritten offsets hashes
the same, and a wrong offset does not; a fragmented MP4 adds its ``mdat``
atoms whole); WAV/AIFF - the format and sample data chunks.

What each family can store
--------------------------
Vorbis comments and MP4 atoms store any list of strings, empty strings and
NUL included. ID3 cannot: mutagen drops empty text values, NUL separates
values, and it turns some genre texts into ID3v1 genre names when it reads
them ("17" -> "Rock", "CR" -> "Cover", text after a line break dropped);
such values are refused with a TagWriteError before anything is written.
A leading "(" in an ID3 genre is escaped so it reads back literally.

Not carried over to the new file: extended attributes and ACLs (only the
permission bits, owner and group are).
"""
from __future__ import annotations

import hashlib
import os
import re
import stat as stat_module
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from tagger.errors import (FileChanged, FileMissing, TaggerError, TagWriteError, UnreadableAudio,
                           UnsupportedFormat)
from tagger.formats import id3_size

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

#: format -> tag family (WAV and AIFF carry an ID3 chunk)
FAMILY_OF = {"mp3": "id3", "wav": "id3", "aiff": "id3", "flac": "vorbis", "ogg": "vorbis",
             "opus": "vorbis", "m4a": "mp4"}

#: marks our temporary copies: ``.<name>.tagger-<random>.tmp`` (see :func:`is_temp_name`)
TEMP_MARK = ".tagger-"
TEMP_SUFFIX = ".tmp"
_TEMP_KEEP = 80  # at most this many characters of the file's name start a temporary copy's name
_TEMP_RANDOM = 8  # tempfile.mkstemp's random part: 8 of a-z, 0-9 and _


@dataclass(frozen=True)
class FileStat:
    """What tells us a file changed: its size and mtime (ns)."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | Path) -> "FileStat":
        return cls.from_stat(os.stat(path))

    @classmethod
    def from_stat(cls, st: os.stat_result) -> "FileStat":
        return cls(int(st.st_size), int(st.st_mtime_ns))


@dataclass(frozen=True)
class WriteResult:
    """Our fields before and after a write, and the file as it now is."""

    before: dict[str, list[str]]
    after: dict[str, list[str]]
    changed: bool  # False: the values were already there, the file was not touched
    stat: FileStat  # the file's stat after the write (record it for incremental scans)
    fingerprint: str  # audio payload hash, identical before and after


class UnreadableFrames(TagWriteError):
    """The file's ID3 tag holds frames mutagen cannot read (or reads but would not write back):
    any rewrite would silently drop them, and undo could not bring them back. Permanent."""


# ---------------------------------------------------------------- public API
def read(path: str | Path, fmt: str) -> dict[str, list[str]]:
    """Current values of our fields (``[]`` when absent); raises UnreadableAudio."""
    family = _family(fmt)
    f = _load(path, fmt, UnreadableAudio)
    return _fields(family, f)


def write(path: str | Path, fmt: str, values: dict[str, list[str]], *,
          expect: FileStat | None = None) -> WriteResult:
    """Set our fields to ``values`` (field -> list of strings; ``[]`` removes the field).

    Fields not in ``values`` keep their value. See the module docstring for
    the safety guarantees and the mtime policy.

    Raises
    ------
    FileChanged
        ``expect`` is given and the file's size or mtime differs, or the
        file changed while we were writing the copy. Nothing is written.
    FileMissing
        The file does not exist (any more).
    TagWriteError
        Anything else: read-only file or directory, a value the format
        cannot store, mutagen failing, verification failing, disk full.
        The original file is untouched.
    """
    family = _family(fmt)
    _check_values(family, values)
    real = Path(os.path.realpath(path))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise FileMissing("the file no longer exists") from None
    except OSError as e:
        raise TagWriteError(f"cannot stat the file ({e.strerror or e})") from None
    if expect is not None and FileStat.from_stat(st) != expect:
        raise FileChanged("the file changed on disk since it was analysed; not written")
    if not stat_module.S_ISREG(st.st_mode):
        raise TagWriteError("not a regular file")
    if st.st_nlink > 1:
        raise TagWriteError(f"the file has {st.st_nlink} hard links; replacing it would split them")
    if not _writable(real, st):
        raise TagWriteError("the file is read-only")
    folder = real.parent
    try:
        folder_st = os.stat(folder)
    except OSError as e:
        raise TagWriteError(f"cannot stat the folder ({e.strerror or e})") from None
    if not _writable(folder, folder_st, directory=True):
        raise TagWriteError(f"the folder {folder} is read-only (a safe write needs a temporary file there)")

    original = _load(real, fmt, TagWriteError)
    before = _fields(family, original)
    target = {k: list(values.get(k, before[k])) for k in FIELDS}
    try:
        fingerprint = audio_fingerprint(real, fmt)
    except UnreadableAudio as e:
        raise TagWriteError(f"not written: {e.message}") from None
    if target == before:
        return WriteResult(before, before, False, FileStat.from_stat(st), fingerprint)
    try:
        lost = family.would_lose(real, fmt)
    except FileNotFoundError:
        raise FileMissing("the file no longer exists") from None
    except Exception as e:  # a tag too odd to walk is not one to rewrite either
        raise TagWriteError(f"cannot check the file's tags before writing, file left as it was ({_reason(e)})") from e
    if lost:
        raise UnreadableFrames(f"the file has {lost}; not rewritten, as a rewrite would drop them")
    others = family.others(original)

    fd, tmp_name = _make_temp(real)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, open(real, "rb") as src:
            _copy_file(src, out, st.st_size)
        copy = _load(tmp, fmt, TagWriteError)
        if copy.tags is None:
            copy.add_tags()
        for field, key in _keys(family):
            if target[field] == before[field]:
                continue  # untouched fields stay exactly as they are stored
            if target[field]:
                family.put(copy.tags, key, target[field])
            else:
                family.drop(copy.tags, key)
        family.save(copy)
        _verify(tmp, fmt, family, target, others, fingerprint)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _match_metadata(tmp, st)
        if FileStat.of(real) != FileStat.from_stat(st):
            raise FileChanged("the file changed on disk while its tags were being written; not written")
        os.replace(tmp, real)
    except TaggerError:
        _discard(tmp)
        raise
    except Exception as e:  # mutagen, OS and parsing errors all mean: not written
        _discard(tmp)
        raise TagWriteError(f"writing tags failed, file left as it was ({_reason(e)})") from e
    _fsync_dir(folder)
    return WriteResult(before, target, True, FileStat.of(real), fingerprint)


#: exactly the names :func:`_make_temp` gives: a dot, the start of the file's name, the mark,
#: mkstemp's 8 random characters, ".tmp"
_TEMP_NAME = re.compile(rf"\..*{re.escape(TEMP_MARK)}[a-z0-9_]{{{_TEMP_RANDOM}}}{re.escape(TEMP_SUFFIX)}", re.DOTALL)

#: a temporary copy untouched this long (by mtime) is a write that died (kill -9, power cut):
#: no live write takes an hour, so another worker's copy in progress is never removed
STALE_TEMP_AGE_S = 3600.0


def is_temp_name(name: str) -> bool:
    """Whether ``name`` (a file's name, no folder) is one of tagger's temporary copies."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_stale_temps(folder: str | Path, older_than_s: float = STALE_TEMP_AGE_S,
                       entries: Iterable[os.DirEntry] | None = None) -> list[str]:
    """Delete the temporary copies that writes killed midway left in ``folder``; return their paths.

    Only regular files (not links, not folders) named exactly as :func:`is_temp_name` says and
    not modified for ``older_than_s`` seconds are removed; anything else is never touched.
    ``entries``: the folder's listing when the caller has read it already (a scan's walk), so
    the folder is not listed twice. A copy that cannot be removed (a read-only folder) stays.
    """
    if entries is None:
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            return []
    cutoff = time.time() - older_than_s
    removed = []
    for entry in entries:
        if TEMP_MARK not in entry.name or not is_temp_name(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat_module.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(entry.path)
        except OSError:
            continue  # gone already (another scan), or not ours to remove
    return removed


def audio_fingerprint(path: str | Path, fmt: str) -> str:
    """SHA-256 (hex) of the file's encoded audio payload; tags do not change it.

    See the module docstring for what the payload is in each format.
    Raises UnreadableAudio when the container cannot be parsed.
    """
    if fmt not in _PAYLOAD:
        raise UnsupportedFormat(f"no audio payload reader for {fmt!r} files")
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            _PAYLOAD[fmt](f, h.update)
    except FileNotFoundError:
        raise FileMissing("the file no longer exists") from None
    except Exception as e:  # OS errors, truncated or malformed containers, mutagen parse errors
        raise UnreadableAudio(f"cannot read the audio payload ({_reason(e)})") from None
    return h.hexdigest()


# ---------------------------------------------------------------- write helpers
def _family(fmt: str) -> "_Family":
    try:
        return _FAMILIES[FAMILY_OF[fmt]]
    except KeyError:
        raise UnsupportedFormat(f"tagger cannot tag {fmt!r} files") from None


def _keys(family: "_Family") -> list[tuple[str, str]]:
    return [(field, FIELD_TABLE[field][family.name]) for field in FIELDS]


def _fields(family: "_Family", f: Any) -> dict[str, list[str]]:
    if f.tags is None:
        return {field: [] for field in FIELDS}
    return {field: family.get(f.tags, key) for field, key in _keys(family)}


def _check_values(family: "_Family", values: dict[str, list[str]]) -> None:
    for field, vals in values.items():
        if field not in FIELD_TABLE:
            raise ValueError(f"unknown field {field!r}; expected one of {FIELDS}")
        if isinstance(vals, str) or not all(isinstance(v, str) for v in vals):
            raise TypeError(f"values of {field!r} must be a list of str, got {vals!r}")
        key = FIELD_TABLE[field][family.name]
        for v in vals:
            problem = family.cannot_store(key, v)
            if problem:
                raise TagWriteError(f"cannot store {field} value {v!r}: {problem}")


def _load(path: str | Path, fmt: str, error: type[TaggerError]) -> Any:
    try:
        return _OPENERS[fmt]()(str(path))
    except FileNotFoundError:
        raise FileMissing("the file no longer exists") from None
    except Exception as e:
        raise error(f"cannot read the tags ({_reason(e)})") from None


def _verify(tmp: Path, fmt: str, family: "_Family", target: dict[str, list[str]],
            others: list[tuple[str, str]], fingerprint: str) -> None:
    check = _load(tmp, fmt, TagWriteError)
    got = _fields(family, check)
    if got != target:
        bad = [k for k in FIELDS if got[k] != target[k]]
        raise TagWriteError(f"verification failed: {', '.join(bad)} read back differently")
    now = family.others(check)
    if now != others:
        changed = sorted({k for k, _ in now} ^ {k for k, _ in others}
                         | {a[0] for a, b in zip(now, others) if a != b})
        raise TagWriteError(f"verification failed: other tags changed ({', '.join(changed)[:200]})")
    if audio_fingerprint(tmp, fmt) != fingerprint:
        raise TagWriteError("verification failed: the audio data changed")


def _writable(path: Path, st: os.stat_result, directory: bool = False) -> bool:
    # Root passes os.access on anything; the mode bits still say what the user meant.
    mode = os.W_OK | (os.X_OK if directory else 0)
    return os.access(path, mode) and bool(st.st_mode & 0o222)


def _make_temp(real: Path) -> tuple[int, str]:
    try:
        name_max = os.pathconf(real.parent, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):
        name_max = 255
    # ".<kept>.tagger-XXXXXXXX.tmp": the kept start of the name is cut by its encoded bytes
    # (a name of 80 CJK characters is 240 bytes), between characters, so the whole fits
    room = min(name_max, 255) - len(f".{TEMP_MARK}{'x' * _TEMP_RANDOM}{TEMP_SUFFIX}")
    kept, used = [], 0
    for ch in real.name[:_TEMP_KEEP]:
        used += len(os.fsencode(ch))
        if used > room:
            break
        kept.append(ch)
    try:
        return tempfile.mkstemp(prefix=f".{''.join(kept)}{TEMP_MARK}", suffix=TEMP_SUFFIX, dir=real.parent)
    except OSError as e:
        raise TagWriteError(f"cannot create a temporary file next to the file ({e.strerror or e})") from None


def _match_metadata(tmp: Path, st: os.stat_result) -> None:
    os.chmod(tmp, stat_module.S_IMODE(st.st_mode))
    try:
        os.chown(tmp, st.st_uid, st.st_gid)
    except OSError:
        pass  # only root (or the owner, for the group) may; the copy is then ours


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(text).split())[:300]


def _digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


# ---------------------------------------------------------------- tag families
class _Family:
    """How one tag family stores a key: get, put, drop; what else it holds; how to save."""

    name: str

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
        raw = _id3_tag_bytes(path, fmt)
        return None if raw is None else _id3_losses(raw)

    def save(self, f):
        # Keep the file's ID3 version (v2.3 stays v2.3 for old players). mutagen
        # holds frames as v2.4 in memory and converts back; v23_sep=None keeps
        # multiple values NUL-separated, as mutagen reads them, instead of
        # joining them with "/" (which would not read back as the same list).
        version = 3 if f.tags.version[:2] == (2, 3) else 4
        f.save(v2_version=version, v23_sep=None)


class _Vorbis(_Family):
    """Vorbis comments (FLAC, Ogg Vorbis, Opus): KEY=value pairs, keys case-insensitive."""

    name = "vorbis"

    def get(self, tags, key):
        return list(tags[key]) if key in tags else []

    def put(self, tags, key, values):
        tags[key] = list(values)

    def drop(self, tags, key):
        if key in tags:
            del tags[key]

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


_FAMILIES: dict[str, _Family] = {"id3": _ID3(), "vorbis": _Vorbis(), "mp4": _MP4()}


def _opener(module: str, cls: str) -> Callable[[], Callable[[str], Any]]:
    def get():
        import importlib

        return getattr(importlib.import_module(module), cls)
    return get


_OPENERS: dict[str, Callable[[], Callable[[str], Any]]] = {
    "mp3": _opener("mutagen.mp3", "MP3"),
    "wav": _opener("mutagen.wave", "WAVE"),
    "aiff": _opener("mutagen.aiff", "AIFF"),
    "flac": _opener("mutagen.flac", "FLAC"),
    "ogg": _opener("mutagen.oggvorbis", "OggVorbis"),
    "opus": _opener("mutagen.oggopus", "OggOpus"),
    "m4a": _opener("mutagen.mp4", "MP4"),
}


# ---------------------------------------------------------------- audio payloads
Sink = Callable[[bytes], None]
_BLOCK = 1 << 20


def _copy_file(src, out, size: int) -> None:
    """Copy an open file in the kernel (a shared extent where the filesystem can), else through memory."""
    copied = 0
    try:
        while copied < size:
            n = os.copy_file_range(src.fileno(), out.fileno(), size - copied)
            if n == 0:
                break
            copied += n
    except (AttributeError, OSError):
        pass  # not on this platform or filesystem: the plain way, from where it stopped
    src.seek(copied)
    out.seek(copied)
    while block := src.read(_BLOCK):
        out.write(block)


def _copy_range(f, start: int, end: int, sink: Sink) -> None:
    f.seek(start)
    left = end - start
    while left > 0:
        block = f.read(min(_BLOCK, left))
        if not block:
            raise EOFError("file ends early")
        sink(block)
        left -= len(block)


def _skip_id3v2(f) -> int:
    """Offset just after the ID3v2 tag(s) at the start of the file."""
    offset = 0
    while True:
        f.seek(offset)
        head = f.read(10)
        if len(head) < 10 or head[:3] != b"ID3":
            return offset
        offset += id3_size(head)


# ---------------------------------------------------------------- raw ID3 frames
# mutagen drops some frames without a word when it loads a tag: a frame whose content it
# cannot parse (a text encoding byte that is not 0-3), bytes that are no frame header, an id
# that is not a frame id; on save it drops unknown frames of an older version (ID3v2.2) and
# the ID3v2.3 frames its conversion to v2.4 discards. What mutagen loaded cannot tell which,
# so the frames are walked as stored and each is checked to be one mutagen keeps.

#: ID3v2.3 frames mutagen reads and then discards (update_to_v24), with no v2.4 equivalent
_ID3_V23_DISCARDED = frozenset({"RVAD", "EQUA", "TRDA", "TSIZ"})


def _id3_tag_bytes(path: Path, fmt: str) -> bytes | None:
    """The ID3v2 tag mutagen reads and rewrites (header, frames, padding), as stored; None: none."""
    with open(path, "rb") as f:
        if fmt == "mp3":
            start: int | None = 0
        else:  # WAV and AIFF: the tag is the body of an "id3 " chunk
            start = _iff_chunk(f, little=fmt == "wav", ids=(b"id3", b"ID3") if fmt == "wav" else (b"ID3",))
        if start is None:
            return None
        f.seek(start)
        head = f.read(10)
        if len(head) < 10 or head[:3] != b"ID3":
            return None
        footer = 10 if head[5] & 0x10 else 0  # a copy of the header after the frames: not read
        return head + f.read(id3_size(head) - 10 - footer)


def _iff_chunk(f, little: bool, ids: tuple[bytes, ...]) -> int | None:
    """Offset of the body of the first top-level chunk of a RIFF/FORM file with one of ``ids``."""
    size = f.seek(0, os.SEEK_END)
    offset = 12
    while offset + 8 <= size:
        f.seek(offset)
        head = f.read(8)
        if head[:4].rstrip() in ids:
            return offset + 8
        n = int.from_bytes(head[4:8], "little" if little else "big")
        offset += 8 + n + (n & 1)
    return None


def _id3_losses(raw: bytes) -> str | None:
    """What a rewrite of this ID3v2 tag by mutagen would lose, in words; None when nothing."""
    import io

    from mutagen.id3 import ID3, Frames

    def load(tag: bytes) -> Any:
        return ID3(io.BytesIO(tag), translate=False, load_v1=False)

    version, flags = raw[3], raw[5]
    try:
        whole = load(raw)
    except Exception as e:
        return f"an ID3 tag tagger cannot read ({_reason(e)})"
    start = 10
    data = raw[10:]
    if flags & 0x40:  # an extended header, skipped as mutagen skips it
        ext = data[:4]
        if ext.decode("ascii", "replace") in Frames:
            pass  # the flag is set but the frames follow at once
        else:
            skip = _syncsafe(ext) if version >= 4 else 4 + int.from_bytes(ext, "big")
            data, start = data[skip:], start + skip
    if version < 4 and flags & 0x80:  # the whole tag unsynchronised (v2.4 does it per frame)
        data = data.replace(b"\xff\x00", b"\xff")
    loaded = len(whole.keys()) + len(whole.unknown_frames)  # merged duplicates count once

    def unreadable(syncsafe: bool) -> list[str]:
        frames = _id3_frames(data, version, syncsafe)
        if len(frames) == loaded:
            return []  # every frame stored is one mutagen loaded
        bad = []
        for at, fid, fflags, body in frames:  # fewer: find the ones it dropped, one at a time
            one = _id3_frame(version, fid, fflags, body)
            tag = b"ID3" + bytes([version, 0, flags & 0x80 if version >= 4 else 0])
            try:
                kept = load(tag + _syncsafe_bytes(len(one)) + one)
                ok = bool(kept.keys()) or bool(kept.unknown_frames)
            except Exception:
                ok = False
            if not ok:
                name = fid.decode("ascii", "replace").rstrip("\x00")
                if name.isalnum() and name.isupper():
                    what = f"a {name} frame"
                elif name.isascii() and name.isprintable():
                    what = f"a frame named {name!r}"
                else:
                    what = "bytes that are no frame"
                bad.append(f"{what} at byte {start + at}")
        return bad

    bad = unreadable(True)
    if bad and version >= 4 and not unreadable(False):
        bad = []  # frame sizes written as plain integers (old iTunes), which mutagen reads as such
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        return f"ID3 frames tagger cannot read ({', '.join(bad[:3])}{more} of the tag)"
    unkept = []
    if version < 4:
        discarded = sorted({fr.FrameID for fr in whole.values()} & _ID3_V23_DISCARDED)
        unkept += [f"{', '.join(discarded)}: no ID3v2.4 equivalent"] if discarded else []
    if version < 3 and whole.unknown_frames:
        unkept.append("ID3v2.2 frames mutagen does not know")
    if unkept:
        return f"ID3 frames tagger cannot write back ({'; '.join(unkept)})"
    return None


def _syncsafe(four: bytes) -> int:
    """A frame's ID3v2.4 "synchsafe" size: 7 bits of each byte, the top bit ignored (as mutagen does)."""
    size = 0
    for b in four:
        size = (size << 7) | (b & 0x7F)
    return size


def _id3_frames(data: bytes, version: int, syncsafe: bool) -> list[tuple[int, bytes, int, bytes]]:
    """The frames stored in a tag's frame area, as (offset, id, flags, body), walked as mutagen
    walks them: up to padding (an id of zero bytes) or the end; empty frames left out."""
    head = 6 if version < 3 else 10
    frames = []
    at = 0
    while len(data) - at >= head:
        fid = data[at:at + (3 if version < 3 else 4)]
        if fid.strip(b"\x00") == b"":
            break  # padding
        if version < 3:
            size, fflags = int.from_bytes(data[at + 3:at + 6], "big"), 0
        else:
            four = data[at + 4:at + 8]
            size = _syncsafe(four) if version >= 4 and syncsafe else int.from_bytes(four, "big")
            fflags = int.from_bytes(data[at + 8:at + 10], "big")
        if size:
            frames.append((at, fid, fflags, data[at + head:at + head + size]))
        at += head + size
    return frames


def _id3_frame(version: int, fid: bytes, fflags: int, body: bytes) -> bytes:
    """One frame as stored, its size written the standard way for its version."""
    if version < 3:
        return fid + len(body).to_bytes(3, "big") + body
    size = _syncsafe_bytes(len(body)) if version >= 4 else len(body).to_bytes(4, "big")
    return fid + size + fflags.to_bytes(2, "big") + body


def _syncsafe_bytes(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def _mp3_payload(f, sink: Sink) -> None:
    start = _skip_id3v2(f)
    end = f.seek(0, os.SEEK_END)
    if end - start >= 128:
        f.seek(end - 128)
        if f.read(3) == b"TAG":  # ID3v1, which mutagen rewrites from the v2 tag
            end -= 128
    if end <= start:
        raise ValueError("no audio after the tags")
    _copy_range(f, start, end, sink)


def _flac_payload(f, sink: Sink) -> None:
    offset = _skip_id3v2(f)
    f.seek(offset)
    if f.read(4) != b"fLaC":
        raise ValueError("not a FLAC stream")
    last = False
    while not last:
        header = f.read(4)
        if len(header) < 4:
            raise EOFError("metadata ends early")
        last, code = bool(header[0] & 0x80), header[0] & 0x7F
        length = int.from_bytes(header[1:4], "big")
        body = f.read(length)
        if code == 0:  # STREAMINFO: sample rate, channels, length, MD5 of the audio
            sink(body)
    start = f.tell()
    _copy_range(f, start, f.seek(0, os.SEEK_END), sink)


def _ogg_payload(f, sink: Sink) -> None:
    from mutagen.ogg import OggPage

    # Packets are rebuilt from their pieces: mutagen may cut the header
    # packets into pages differently after a write, the packets stay the same.
    index: dict[int, int] = {}  # serial -> index of the packet being read
    pending: dict[int, bytes] = {}  # serial -> start of a packet continued on a later page

    def emit(serial: int, n: int, data: bytes) -> None:
        if n != 1:  # packet 1 is the comment header (Vorbis comment / OpusTags)
            sink(struct.pack(">Iq", serial, n) + data)

    f.seek(0)
    while True:
        try:
            page = OggPage(f)
        except EOFError:
            break
        serial = page.serial
        n = index.get(serial, -1)
        for i, data in enumerate(page.packets):
            if i == 0 and page.continued:
                data = pending.pop(serial, b"") + data
            else:
                n += 1
            if i == len(page.packets) - 1 and not page.complete:
                pending[serial] = data
            else:
                emit(serial, n, data)
        index[serial] = n
        if page.position > 0:
            sink(struct.pack(">Iq", serial, page.position))
    if not index:
        raise ValueError("no Ogg pages")
    for serial, data in pending.items():  # a last packet cut short still counts
        emit(serial, index[serial], data)


def _iff_payload(little: bool, keep: tuple[bytes, ...]) -> Callable[[Any, Sink], None]:
    """RIFF/WAVE (little-endian) or FORM/AIFF (big-endian): hash the ``keep`` chunks."""
    def payload(f, sink: Sink) -> None:
        size = f.seek(0, os.SEEK_END)
        offset, found = 12, 0
        while offset + 8 <= size:
            f.seek(offset)
            head = f.read(8)
            cid = head[:4]
            n = int.from_bytes(head[4:8], "little" if little else "big")
            end = min(size, offset + 8 + n)  # streamed WAVs may claim more than exists
            if cid in keep:
                sink(cid)
                _copy_range(f, offset + 8, end, sink)
                found += 1
            offset = offset + 8 + n + (n & 1)
        if found < len(keep):
            raise ValueError("format or sample data chunk missing")
    return payload


def _mp4_payload(f, sink: Sink) -> None:
    from mutagen.mp4 import Atoms

    f.seek(0)
    atoms = Atoms(f)
    sound = 0
    fragmented = any(atom.name == b"moof" for atom in atoms.atoms)
    for trak in atoms[b"moov"].findall(b"trak"):
        ok, hdlr = trak[b"mdia", b"hdlr"].read(f)
        if not ok or hdlr[8:12] != b"soun":
            continue
        sound += 1
        stbl = trak[b"mdia", b"minf", b"stbl"]

        def body(name: bytes) -> bytes:
            ok, data = stbl[(name,)].read(f)
            if not ok:
                raise EOFError(f"{name.decode()} atom cut short")
            return data

        sink(body(b"stsd"))
        sink(body(b"stts"))
        stsz = body(b"stsz")
        fixed, count = struct.unpack(">II", stsz[4:12])
        sizes = [fixed] * count if fixed else list(struct.unpack(f">{count}I", stsz[12:12 + 4 * count]))
        stsc = body(b"stsc")
        (entries,) = struct.unpack(">I", stsc[4:8])
        runs = [struct.unpack(">III", stsc[8 + 12 * i: 20 + 12 * i]) for i in range(entries)]
        if b"stco" in [c.name for c in stbl.children]:
            data = body(b"stco")
            offsets = struct.unpack(f">{struct.unpack('>I', data[4:8])[0]}I", data[8:])
        else:
            data = body(b"co64")
            offsets = struct.unpack(f">{struct.unpack('>I', data[4:8])[0]}Q", data[8:])
        sample = 0
        for chunk, offset in enumerate(offsets, start=1):
            per_chunk = next(spc for first, spc, _ in reversed(runs) if first <= chunk)
            length = sum(sizes[sample: sample + per_chunk])
            sample += per_chunk
            _copy_range(f, offset, offset + length, sink)
        if sample < count:
            raise ValueError("the chunk table does not cover every sample")
    if not sound:
        raise ValueError("no sound track")
    if fragmented:  # samples live in movie fragments: hash every media data atom instead
        for atom in atoms.atoms:
            if atom.name == b"mdat":
                _copy_range(f, atom._dataoffset, atom.offset + atom.length, sink)


_PAYLOAD: dict[str, Callable[[Any, Sink], None]] = {
    "mp3": _mp3_payload,
    "flac": _flac_payload,
    "ogg": _ogg_payload,
    "opus": _ogg_payload,
    "m4a": _mp4_payload,
    "wav": _iff_payload(True, (b"fmt ", b"data")),
    "aiff": _iff_payload(False, (b"COMM", b"SSND")),
}
