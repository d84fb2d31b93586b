"""A WAV file's RIFF INFO list (``LIST`` chunk of type ``INFO``): read its entries, set one, keep the rest.

mutagen reads and writes a WAV's ``id3 `` chunk but not its INFO list, which
ffprobe, Windows and many players read for the genre (``IGNR``); ffprobe shows
the INFO list's genre over the ID3 chunk's. So tagger writes the genre into both
(tagger/tags/fields.py, the WAV family), and this module does the INFO half:

- Only the first INFO list is read and written (a file seldom has two). Its
  entries are ``id, size, text, pad byte to an even size``; the text is stored
  NUL-terminated, read as UTF-8 (what FFmpeg and tagger write), else Latin-1,
  trailing NULs dropped.
- Setting an entry keeps every other entry's bytes as they were, in their order,
  and puts the new values where the first entry of that id stood (at the end of
  the list when there was none). Removing the last entry removes the list, so a
  file that had no INFO list has none after an undo. A new list goes just before
  the ``data`` chunk, where FFmpeg writes it and where readers that stop at the
  audio find it.
- Every other chunk, the ``data`` chunk included, keeps its bytes; chunks after
  the changed list move by its change in size, and the RIFF size is updated.

Limits: an entry stored another way than NUL-terminated UTF-8 (extra NULs,
Latin-1 text) comes back after an undo as the same text, written the standard way.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

INFO = b"INFO"
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Chunk:
    """One top-level chunk: its id, where its header starts, and where it ends (pad byte included)."""

    id: bytes
    offset: int
    end: int


def _le32(b: bytes) -> int:
    return int.from_bytes(b, "little")


def chunks(f) -> list[Chunk]:
    """The top-level chunks of an open RIFF/WAVE file, in order; ValueError when it is not one."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    riff = _le32(head[4:8])
    limit = min(size, 8 + riff) if riff >= 4 else size
    out, offset = [], 12
    while offset + 8 <= limit:
        f.seek(offset)
        h = f.read(8)
        n = _le32(h[4:8])
        end = min(offset + 8 + n + (n & 1), size)  # a streamed WAV's data may claim more than exists
        out.append(Chunk(h[:4], offset, end))
        offset = end
    return out


def _info_chunk(f, found: list[Chunk]) -> tuple[Chunk, bytes] | None:
    """The first LIST chunk of type INFO and its body (``INFO`` and the entries), or None."""
    for c in found:
        if c.id == b"LIST":
            f.seek(c.offset + 4)
            n = _le32(f.read(4))
            body = f.read(n)
            if body[:4] == INFO:
                return c, body
    return None


def _entries(body: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """An INFO list's entries as (id, the entry's bytes as stored: header, text, pad), and the
    bytes after the last whole entry (an entry that runs past the list's end; kept as they are)."""
    out, at = [], 4
    while len(body) - at >= 8:
        n = _le32(body[at + 4:at + 8])
        if at + 8 + n > len(body):
            break
        end = min(at + 8 + n + (n & 1), len(body))
        out.append((body[at:at + 4], body[at:end]))
        at = end
    return out, body[at:]


def _text(entry: bytes) -> str:
    data = entry[8:8 + _le32(entry[4:8])].rstrip(b"\x00")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _entry(cid: bytes, value: str) -> bytes:
    data = value.encode("utf-8") + b"\x00"
    return cid + len(data).to_bytes(4, "little") + data + (b"\x00" if len(data) & 1 else b"")


def read(path: str | Path) -> dict[str, list[str]]:
    """The first INFO list's entries: id (``"IGNR"``) -> texts, in order; ``{}`` without a list."""
    with open(path, "rb") as f:
        found = _info_chunk(f, chunks(f))
    if found is None:
        return {}
    out: dict[str, list[str]] = {}
    entries, _ = _entries(found[1])
    for cid, raw in entries:
        out.setdefault(cid.decode("latin-1"), []).append(_text(raw))
    return out


def others(path: str | Path, skip: set[str]) -> list[tuple[str, str]]:
    """What a write of the ``skip`` entries must leave as it was, as (what, digest): the order of the
    top-level chunks and the bytes of each one but the ``id3 `` chunk (mutagen's), the INFO list and
    ``data`` (the audio payload's hash covers it), and the INFO list's other entries, in order."""
    def digest(b: bytes) -> str:
        return hashlib.sha256(b).hexdigest()[:32]

    with open(path, "rb") as f:
        found = chunks(f)
        info = _info_chunk(f, found)
        kept = [c for c in found if c.id.rstrip().lower() != b"id3" and (info is None or c != info[0])]
        out = [("<riff chunks>", digest(b"".join(c.id for c in kept)))]
        for i, c in enumerate(kept):
            if c.id != b"data":
                f.seek(c.offset)
                out.append((f"<riff chunk {i} {c.id.decode('latin-1')}>", digest(f.read(c.end - c.offset))))
    if info is not None:
        entries, tail = _entries(info[1])
        rest = [raw for cid, raw in entries if cid.decode("latin-1") not in skip]
        if rest or tail:  # a list of nothing but ours is none (a write may add or remove it)
            out.append(("<riff info entries>", digest(b"".join(rest) + b"|" + tail)))
    return out


def write(path: str | Path, cid: str, values: list[str]) -> None:
    """Make the first INFO list hold ``values`` under ``cid`` (``[]``: none), every other byte kept.

    Raises ValueError for a file that is no RIFF/WAVE file.
    """
    key = cid.encode("ascii")
    new_entries = [_entry(key, v) for v in values]
    with open(path, "r+b") as f:
        found = chunks(f)
        info = _info_chunk(f, found)
        if info is None:
            if not values:
                return
            data = next((c for c in found if c.id == b"data"), None)
            at = data.offset if data is not None else f.seek(0, os.SEEK_END)
            start = end = at
            body = INFO + b"".join(new_entries)
        else:
            chunk, old = info
            entries, tail = _entries(old)
            kept: list[bytes] = []
            placed = False
            for eid, raw in entries:
                if eid == key:
                    if not placed:
                        kept += new_entries
                        placed = True
                    continue
                kept.append(raw)
            if not placed:
                kept += new_entries
            start, end = chunk.offset, chunk.end
            body = INFO + b"".join(kept) + tail if kept or tail else b""
        new = b"LIST" + len(body).to_bytes(4, "little") + body + (b"\x00" if len(body) & 1 else b"") if body else b""
        delta = len(new) - (end - start)
        f.seek(4)
        riff = _le32(f.read(4)) + delta
        if not 0 <= riff < 1 << 32:
            raise ValueError("the RIFF size would not fit in 32 bits")
        _splice(f, start, end, new)
        f.seek(4)
        f.write(riff.to_bytes(4, "little"))


def _splice(f, start: int, end: int, new: bytes) -> None:
    """Replace the bytes [start, end) of the open file with ``new``, moving what follows."""
    size = f.seek(0, os.SEEK_END)
    delta = len(new) - (end - start)
    if delta > 0:  # move the tail back to front, so nothing is overwritten before it is read
        pos = size
        while pos > end:
            n = min(_BLOCK, pos - end)
            f.seek(pos - n)
            block = f.read(n)
            f.seek(pos - n + delta)
            f.write(block)
            pos -= n
    elif delta < 0:
        pos = end
        while pos < size:
            n = min(_BLOCK, size - pos)
            f.seek(pos)
            block = f.read(n)
            f.seek(pos + delta)
            f.write(block)
            pos += n
        f.truncate(size + delta)
    f.seek(start)
    f.write(new)
