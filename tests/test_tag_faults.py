"""Faults found by probing tagger.tags (#22 items 3 and 5), each on real files read back with plain mutagen."""
from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from audiofiles import SAMPLE_TAGS, SUFFIX, all_tags
from tagger import tags
from tagger.tags import writing as tag_writing
from tagger.errors import TagWriteError

NEW = {"genre": ["Jazz"], "confidence": ["0.873"], "model": ["deep-cnn 1.0.0"]}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if tags.TEMP_MARK in p.name]


# ---------------------------------------------------------------- item 3: long UTF-8 names
# Each name is itself under 255 bytes, so the file exists; the temporary copy's name must fit too.
LONG_STEMS = {
    "80 CJK characters": "音" * 80,  # 240 bytes
    "60 emoji": "🎵" * 60,  # 240 bytes
    "ascii then 82 CJK": "a" + "楽" * 82,  # 247 bytes: the cut falls where a character would split
}


@pytest.mark.parametrize("fmt", ["mp3", "flac"])
@pytest.mark.parametrize("stem", list(LONG_STEMS.values()), ids=list(LONG_STEMS))
def test_files_with_long_utf8_names_are_tagged(audio_factory, tmp_path, fmt, stem):
    name = stem + SUFFIX[fmt]
    assert len(os.fsencode(name)) <= 255
    path = audio_factory(fmt, name=name, seconds=2.0, tags=SAMPLE_TAGS)
    result = tags.write(path, fmt, NEW)
    assert result.changed
    assert plain_fields(path, fmt) == NEW
    title = "TIT2" if fmt == "mp3" else "TITLE"
    assert all_tags(path, fmt)[title]  # the user's tags are still there
    assert leftovers(tmp_path) == []


def plain_fields(path: Path, fmt: str) -> dict[str, list[str]]:
    """Our fields read back with mutagen alone."""
    if fmt == "mp3":
        from mutagen.id3 import ID3

        id3 = ID3(path)
        keys = {"genre": "TCON", "confidence": "TXXX:TAGGER_CONFIDENCE", "model": "TXXX:TAGGER_MODEL"}
        return {k: [t for f in id3.getall(key) for t in f.text] for k, key in keys.items()}
    from mutagen.flac import FLAC

    flac = FLAC(path)
    keys = {"genre": "GENRE", "confidence": "TAGGER_CONFIDENCE", "model": "TAGGER_MODEL"}
    return {k: list(flac.tags.get(key, [])) for k, key in keys.items()}


@pytest.mark.parametrize("name", [
    "音" * 83 + ".mp3",  # 253 bytes: the longest CJK name there can be
    "🎵" * 62 + ".mp3",  # 252 bytes
    "ab" + "🎵" * 61 + ".flac",
    os.fsdecode(b"\xe9\xff" * 120 + b".mp3"),  # undecodable bytes, one byte each
    "short.mp3",
], ids=["83 CJK", "62 emoji", "2 ascii 61 emoji", "undecodable bytes", "short"])
def test_temporary_name_fits_and_keeps_whole_characters(tmp_path, name):
    real = tmp_path / name
    real.write_bytes(b"x")
    fd, tmp_name = tag_writing._make_temp(real)
    os.close(fd)
    try:
        base = os.path.basename(tmp_name)
        assert len(os.fsencode(base)) <= 255
        assert os.path.exists(tmp_name) and os.path.dirname(tmp_name) == str(tmp_path)
        kept = base[1:base.index(tags.TEMP_MARK)]
        assert kept and name.startswith(kept)  # a prefix of the name, cut between characters
        assert os.fsdecode(os.fsencode(kept)) == kept  # no half character (a lone surrogate) made
        assert tags.is_temp_name(base)
    finally:
        os.unlink(tmp_name)


# ---------------------------------------------------------------- item 5: ID3 frames mutagen cannot read
def _syncsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def frame(fid: bytes, body: bytes, version: int = 4, flags: int = 0) -> bytes:
    size = _syncsafe(len(body)) if version == 4 else struct.pack(">I", len(body))
    return fid + size + struct.pack(">H", flags) + body


def id3_tag(frames: bytes, version: int = 4, padding: int = 0) -> bytes:
    return b"ID3" + bytes([version, 0, 0]) + _syncsafe(len(frames) + padding) + frames + b"\x00" * padding


def bare_mp3(audio_factory) -> bytes:
    """A real MP3 (ffmpeg, LAME) without any ID3v2 tag."""
    data = audio_factory("mp3", name="plain.mp3", seconds=2.0).read_bytes()
    while data[:3] == b"ID3":
        size = 0
        for b in data[6:10]:
            size = (size << 7) | (b & 0x7F)
        data = data[10 + size:]
    assert data[:2] == b"\xff\xfb"  # an MPEG audio frame
    return data


TITLE = frame(b"TIT2", b"\x03Title")  # a good frame before the bad one
CORRUPT = {
    # a TCON frame whose text-encoding byte is 9 (only 0-3 exist): mutagen drops it
    "TCON with text encoding 9": id3_tag(TITLE + frame(b"TCON", b"\x09Rock"), padding=32),
    # bytes where a frame should be, not a frame header: mutagen skips them
    "garbage in the frame area": id3_tag(TITLE + bytes(range(0x80, 0xA0)), padding=16),
    # a frame id that is not one (lowercase): mutagen skips it
    "an invalid frame id": id3_tag(TITLE + frame(b"tcon", b"\x03Rock")),
    # ID3v2.3 RVAD, read by mutagen but thrown away by its v2.4 conversion
    "an ID3v2.3 RVAD frame": id3_tag(frame(b"TIT2", b"\x00Title", 3)
                                     + frame(b"RVAD", b"\x03\x10" + b"\x00\x10" * 4, 3), version=3),
}


@pytest.mark.parametrize("tag", list(CORRUPT.values()), ids=list(CORRUPT))
def test_a_file_with_id3_frames_tagger_cannot_read_is_not_rewritten(audio_factory, tmp_path, tag):
    path = tmp_path / "corrupt.mp3"
    path.write_bytes(tag + bare_mp3(audio_factory))
    digest = sha256(path)
    with pytest.raises(TagWriteError) as err:
        tags.write(path, "mp3", NEW)
    message = str(err.value)
    assert err.value.permanent and "\n" not in message
    assert "ID3 frames tagger cannot" in message and "not rewritten" in message
    assert sha256(path) == digest  # not one byte changed
    assert leftovers(tmp_path) == []
    with pytest.raises(TagWriteError, match="ID3 frames tagger cannot"):  # any field, not only the genre
        tags.write(path, "mp3", {"model": ["m"]})
    assert sha256(path) == digest


def test_frames_mutagen_keeps_as_they_are_do_not_stop_a_write(audio_factory, tmp_path):
    """Frames mutagen does not know but keeps byte for byte (an unknown id, an encrypted frame)
    are written back; they are not a reason to refuse."""
    from mutagen.id3 import ID3

    unknown = frame(b"XTST", b"some private data")
    encrypted = frame(b"TPE1", b"\x01\x02sealed", flags=0x0004)
    path = tmp_path / "kept.mp3"
    path.write_bytes(id3_tag(TITLE + unknown + encrypted, padding=64) + bare_mp3(audio_factory))
    previous = tags.read(path, "mp3")
    tags.write(path, "mp3", NEW)
    after = ID3(path)
    assert [t for f in after.getall("TCON") for t in f.text] == NEW["genre"]
    assert sorted(after.unknown_frames) == sorted([unknown, encrypted])
    assert str(after["TIT2"]) == "Title"
    tags.write(path, "mp3", previous)  # and the undo
    assert tags.read(path, "mp3") == previous
    assert sorted(ID3(path).unknown_frames) == sorted([unknown, encrypted])


@pytest.mark.parametrize("fmt", ["wav", "aiff"])
def test_unreadable_frames_in_an_iff_id3_chunk_are_refused_too(audio_factory, tmp_path, fmt):
    path = audio_factory(fmt, seconds=1.0, tags={"title": ["Title"]})
    data = bytearray(path.read_bytes())
    at = data.find(b"TIT2")
    assert at > 0
    data[at:at + 4] = b"tit2"  # the one frame's id made invalid, in place: sizes stay right
    path.write_bytes(bytes(data))
    digest = sha256(path)
    with pytest.raises(TagWriteError, match="ID3 frames tagger cannot read"):
        tags.write(path, fmt, NEW)
    assert sha256(path) == digest
