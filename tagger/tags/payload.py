"""Container parsing: the audio payload of each format (its fingerprint), and the raw ID3 frames.

See tagger/tags/__init__.py for what counts as the payload in each format.
"""
from __future__ import annotations

import hashlib
import mmap
import os
import struct
from pathlib import Path
from typing import Any, Callable, Iterator

from tagger import formats
from tagger.errors import FileMissing, UnreadableAudio, UnsupportedFormat
from tagger.formats import id3_size

def audio_fingerprint(path: str | Path, fmt: str) -> str:
    """SHA-256 (hex) of the file's encoded audio payload; tags do not change it.

    See the module docstring for what the payload is in each format.
    Raises UnreadableAudio when the container cannot be parsed.
    """
    walk = _walker(fmt)
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for piece in walk(f):
                h.update(piece)
    except FileNotFoundError:
        raise FileMissing("the file no longer exists") from None
    except Exception as e:  # OS errors, truncated or malformed containers, mutagen parse errors
        raise UnreadableAudio(f"cannot read the audio payload ({reason(e)})") from None
    return h.hexdigest()


def same_payload(path: str | Path, other: str | Path, fmt: str) -> bool:
    """Whether two files hold the same encoded audio payload, compared byte for byte: what
    :func:`audio_fingerprint` hashes, read from both at once (a 44 MB FLAC file and its copy:
    11-15 ms, against 65 ms to hash both; 2026-12-07).

    Raises UnreadableAudio when either container cannot be parsed.
    """
    walk = _walker(fmt)
    try:
        with open(path, "rb") as f, open(other, "rb") as g:
            return _equal_streams(walk(f), walk(g))
    except FileNotFoundError:
        raise FileMissing("the file no longer exists") from None
    except Exception as e:
        raise UnreadableAudio(f"cannot read the audio payload ({reason(e)})") from None


def _walker(fmt: str) -> Callable[[Any], Iterator[bytes]]:
    kind = formats.RECORDS[fmt].payload if fmt in formats.RECORDS else None
    if kind not in _PAYLOAD:
        raise UnsupportedFormat(f"no audio payload reader for {fmt!r} files")
    return _PAYLOAD[kind]


def _equal_streams(a: Iterator[bytes], b: Iterator[bytes]) -> bool:
    """Whether two streams of pieces join into the same bytes, however each is cut."""
    x = y = b""
    while True:
        while not x:
            x = next(a, None)
            if x is None:
                break
        while not y:
            y = next(b, None)
            if y is None:
                break
        if x is None or y is None:
            return x is None and y is None
        n = min(len(x), len(y))
        if x[:n] != y[:n]:
            return False
        x, y = x[n:], y[n:]


def reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(text).split())[:300]



# ---------------------------------------------------------------- audio payloads
_BLOCK = 1 << 20


def copy_file(src, out, size: int) -> None:
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


def _range(f, start: int, end: int) -> Iterator[bytes]:
    f.seek(start)
    left = end - start
    while left > 0:
        block = f.read(min(_BLOCK, left))
        if not block:
            raise EOFError("file ends early")
        yield block
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


def id3_tag_bytes(path: Path, fmt: str) -> bytes | None:
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


def id3_losses(raw: bytes) -> str | None:
    """What a rewrite of this ID3v2 tag by mutagen would lose, in words; None when nothing."""
    import io

    from mutagen.id3 import ID3, Frames

    def load(tag: bytes) -> Any:
        return ID3(io.BytesIO(tag), translate=False, load_v1=False)

    version, flags = raw[3], raw[5]
    try:
        whole = load(raw)
    except Exception as e:
        return f"an ID3 tag tagger cannot read ({reason(e)})"
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


def _mp3_payload(f) -> Iterator[bytes]:
    start = _skip_id3v2(f)
    end = f.seek(0, os.SEEK_END)
    if end - start >= 128:
        f.seek(end - 128)
        if f.read(3) == b"TAG":  # ID3v1, which mutagen rewrites from the v2 tag
            end -= 128
    if end <= start:
        raise ValueError("no audio after the tags")
    yield from _range(f, start, end)


def _flac_payload(f) -> Iterator[bytes]:
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
            yield body
    start = f.tell()
    yield from _range(f, start, f.seek(0, os.SEEK_END))


def _ogg_payload(f) -> Iterator[bytes]:
    # Each logical stream (serial) is hashed as three streams of its own: its lacing values,
    # its page bodies, its granule positions above 0, all without the comment header (packet
    # 1). The lacing values of consecutive pages, joined, spell every packet's length whatever
    # pages the packet was cut into, so this is the packets themselves: mutagen may cut the
    # header packets into pages differently after a write, the packets stay the same. Pages
    # are parsed here, not by mutagen (one object per page and per packet took 50 ms for a
    # 5-minute Ogg Vorbis file; this takes a few), and each page is hashed whole once its
    # stream is past the comment.
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        raise ValueError("no Ogg pages")
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        view = memoryview(data)
        try:
            streams = _ogg_streams(data, view, size)
        finally:
            view.release()
    for serial in sorted(streams):
        yield struct.pack(">I", serial)
        for h in streams[serial][1:]:
            yield h.digest()


def _ogg_streams(data, view: memoryview, size: int) -> dict[int, list]:
    """serial -> [packet index being read (-1 once past the comment), hash of the lacing values,
    of the bodies, of the granule positions]."""
    streams: dict[int, list] = {}
    offset = 0
    while offset < size:
        if size - offset < 27:
            if not any(data[offset:size]):
                break  # trailing zero bytes after the last page
            raise EOFError("an Ogg page header ends early")
        magic, version, _flags, granule, serial, _seq, _crc, count = _OGG_PAGE.unpack_from(data, offset)
        if magic != b"OggS":
            raise ValueError(f"no Ogg page at byte {offset}")
        if version != 0:
            raise ValueError(f"Ogg page version {version}")
        lacing_at = offset + 27
        body_at = lacing_at + count
        lacing = data[lacing_at:body_at]
        body_size = sum(lacing)
        if len(lacing) < count or body_at + body_size > size:
            raise EOFError("an Ogg page ends early")
        state = streams.get(serial)
        if state is None:
            state = streams[serial] = [0, hashlib.sha256(), hashlib.sha256(), hashlib.sha256()]
        if state[0] < 0:  # past the comment header: the page whole
            state[1].update(lacing)
            state[2].update(view[body_at:body_at + body_size])
        else:
            packet, at = state[0], body_at
            for n in lacing:
                if packet != 1:
                    state[1].update(bytes((n,)))
                    state[2].update(view[at:at + n])
                at += n
                if n < 255:
                    packet += 1
            state[0] = -1 if packet > 1 else packet
        if granule > 0:
            state[3].update(struct.pack(">q", granule))
        offset = body_at + body_size
    if not streams:
        raise ValueError("no Ogg pages")
    return streams


_OGG_PAGE = struct.Struct("<4sBBqIIiB")


def _iff_payload(little: bool, keep: tuple[bytes, ...]) -> Callable[[Any], Iterator[bytes]]:
    """RIFF/WAVE (little-endian) or FORM/AIFF (big-endian): hash the ``keep`` chunks."""
    def payload(f) -> Iterator[bytes]:
        size = f.seek(0, os.SEEK_END)
        offset, found = 12, 0
        while offset + 8 <= size:
            f.seek(offset)
            head = f.read(8)
            cid = head[:4]
            n = int.from_bytes(head[4:8], "little" if little else "big")
            end = min(size, offset + 8 + n)  # streamed WAVs may claim more than exists
            if cid in keep:
                yield cid
                yield from _range(f, offset + 8, end)
                found += 1
            offset = offset + 8 + n + (n & 1)
        if found < len(keep):
            raise ValueError("format or sample data chunk missing")
    return payload


def _mp4_payload(f) -> Iterator[bytes]:
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

        yield body(b"stsd")
        yield body(b"stts")
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
            yield from _range(f, offset, offset + length)
        if sample < count:
            raise ValueError("the chunk table does not cover every sample")
    if not sound:
        raise ValueError("no sound track")
    if fragmented:  # samples live in movie fragments: hash every media data atom instead
        for atom in atoms.atoms:
            if atom.name == b"mdat":
                yield from _range(f, atom._dataoffset, atom.offset + atom.length)


#: payload kind (a format record's ``payload``) -> its hasher
_PAYLOAD: dict[str, Callable[[Any], Iterator[bytes]]] = {
    "mpeg": _mp3_payload,
    "flac": _flac_payload,
    "ogg": _ogg_payload,
    "mp4": _mp4_payload,
    "riff": _iff_payload(True, (b"fmt ", b"data")),
    "aiff": _iff_payload(False, (b"COMM", b"SSND")),
}
