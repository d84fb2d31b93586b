"""What players read, per format: tagger's writes read back with plain mutagen and with ffprobe.

FFmpeg (ffprobe, and players built on it) shows one value of an ID3 TCON frame or an MP4 ``©gen``
atom that holds several (the first), and every value of a Vorbis comment field (joined with ";");
in a WAV it shows the RIFF INFO list's genre over the ID3 chunk's. So several genres are one joined
value in ID3 and MP4, several values in Vorbis comments, and a WAV gets its genre in both places.
"""
from __future__ import annotations

import json
import os
import time

import pytest
from audiofiles import FORMATS, SUFFIX, _open, all_tags, decode, ffprobe_genre, riff_chunks, riff_info
from services import run_cli

from tagger import discover, formats, pipeline, record, scan, tags
from tagger.db import schema as s
from tagger.models.base import Prediction
from tagger.naming import genre_id
from tagger.options import ScanOptions

OTHER = {"title": ["Song"], "artist": ["Artist A", "Artist B"]}
#: format (and ID3 version) -> how a file holds several genres: "list" (several values) or "joined"
SEVERAL = {"mp3": "joined", "mp3-v2.3": "joined", "wav": "joined", "aiff": "joined", "m4a": "joined",
           "flac": "list", "ogg": "list", "opus": "list"}
GENRE_KEY = {"mp3": "TCON", "wav": "TCON", "aiff": "TCON", "m4a": "\xa9gen", "flac": "GENRE", "ogg": "GENRE",
             "opus": "GENRE"}


def plain_genre(path, fmt) -> list[str]:
    """The genre field's values as plain mutagen reads them, without tagger."""
    f = _open(str(path), fmt)
    if f.tags is None:
        return []
    key = GENRE_KEY[fmt]
    if key == "TCON":
        return [t for frame in f.tags.getall("TCON") for t in frame.text]
    return [str(v) for v in f.tags.get(key, [])] if key in f.tags else []


def info_genre(path) -> list[str]:
    return [text.rstrip(b"\x00").decode("utf-8") for cid, text in riff_info(path) if cid == "IGNR"]


def _make(audio_factory, case, **kw):
    fmt = case.split("-")[0]
    path = audio_factory(fmt, name=f"lib/{case}{SUFFIX[fmt]}", seconds=10, **kw)
    if case == "mp3-v2.3":  # an ID3v2.3 tag, as older taggers and players write it: kept v2.3
        f = _open(str(path), fmt)
        f.save(v2_version=3)
    return fmt, path


def _scan_writes(settings, folder, genres: list[str]) -> tuple[int, dict]:
    """A scan of ``folder`` whose every job writes ``genres`` (taxonomy ids, best first), through the
    journaled write a job makes (record.begin_change, record.journaled_write); returns the scan's id
    and what it wrote into each file."""
    scan.prepare_database(settings)
    scan_id = scan.create(settings, [str(folder)], ScanOptions(min_confidence=0.0))
    found = [f for f in discover.walk([str(folder)]) if isinstance(f, discover.Found)]
    ids, _ = scan.record_files(settings, scan_id, found, force=True)
    p = Prediction(genre=genres[0], confidence=0.9, top=[(g, 0.9) for g in genres], model="test-logreg",
                   version="1", decided_by="test", genres=genres)
    wrote = {}
    for aid in ids:
        job = record.start(settings, aid)
        fmt = formats.confirm(job.path)
        current = tags.read(job.path, fmt)
        wanted = pipeline.fields_for(p, job.options, fmt)
        change_id, _ = record.begin_change(settings, file_id=job.file_id, scan_id=scan_id, analysis_id=aid,
                                           action=s.ChangeAction.WRITE, before=current, after=wanted)
        assert record.journaled_write(settings, change_id, job.path, fmt, tags.FileStat(job.size, job.mtime_ns))
        record.finish(settings, job, s.TAGGED, p, current, time.monotonic())
        wrote[job.path] = wanted
    return scan_id, wrote


def test_several_genres_are_written_as_each_formats_players_read_them(settings, audio_factory, tmp_path):
    files = {case: _make(audio_factory, case, tags=OTHER) for case in SEVERAL}
    before = {case: (tags.read(p, fmt), all_tags(p, fmt), tags.audio_fingerprint(p, fmt))
              for case, (fmt, p) in files.items()}
    assert all(ffprobe_genre(p) is None for _, p in files.values())

    scan_id, wrote = _scan_writes(settings, tmp_path / "lib", ["rock", "metal", "hiphop"])
    names = ["Rock", "Metal", "Hip-Hop"]
    for case, (fmt, path) in files.items():
        if SEVERAL[case] == "list":
            assert plain_genre(path, fmt) == names, case  # three values of GENRE
            assert ffprobe_genre(path) == ";".join(names), case  # all three shown (FFmpeg joins them with ";")
        else:
            assert plain_genre(path, fmt) == ["Rock; Metal; Hip-Hop"], case  # one value: players show all three
            assert ffprobe_genre(path) == "Rock; Metal; Hip-Hop", case
        if fmt == "wav":
            assert info_genre(path) == ["Rock; Metal; Hip-Hop"]  # the RIFF INFO list too
        if case == "mp3-v2.3":
            assert _open(str(path), fmt).tags.version[:2] == (2, 3)
        wanted = wrote[str(path)]
        assert tags.read(path, fmt) == wanted, case
        # still tagger's: its model beside the genre; the top genre is read back as the taxonomy's
        assert not record.is_users_genre(wanted) and genre_id(record.our_genre(wanted)) == "rock", case
        assert tags.audio_fingerprint(path, fmt) == before[case][2], case

    out = run_cli(settings, "undo", "--scan", str(scan_id), "--json")
    assert out.returncode == 0, out.stderr
    assert [r["status"] for r in json.loads(out.stdout)] == ["restored"] * len(files)
    for case, (fmt, path) in files.items():
        assert (tags.read(path, fmt), all_tags(path, fmt), tags.audio_fingerprint(path, fmt)) == before[case], case
        assert ffprobe_genre(path) is None and plain_genre(path, fmt) == [], case
        if fmt == "wav":
            assert not riff_info(path)  # it had no INFO list, and has none again


def test_a_scan_writes_the_genre_players_show_and_undo_gives_back_theirs(settings, audio_factory, tmp_path):
    """A user's genre in files of every format (a WAV's in its RIFF INFO list, as ffmpeg writes it),
    kept by a scan, replaced by one with --overwrite: ffprobe shows the new genre; after undo, the
    user's again, and a WAV's chunks are as they were, byte for byte."""
    users = {"title": "Été", "artist": "Zoë", "genre": "Chanson"}
    files = {}
    for fmt in FORMATS:
        name = f"lib/a{SUFFIX[fmt]}"
        if fmt == "wav":  # ffmpeg writes a WAV's tags as a RIFF INFO list, and no ID3 chunk
            files[fmt] = audio_factory(fmt, name=name, seconds=10, metadata=users)
        else:
            files[fmt] = audio_factory(fmt, name=name, seconds=10, tags={k: [v] for k, v in users.items()})
    before = {fmt: (tags.read(p, fmt), all_tags(p, fmt), tags.audio_fingerprint(p, fmt)) for fmt, p in files.items()}
    wav_chunks = riff_chunks(files["wav"])
    assert all(ffprobe_genre(p) == "Chanson" for p in files.values())
    assert tags.read(files["wav"], "wav")["genre"] == []  # only in the INFO list

    kept = run_cli(settings, "scan", "--json", str(tmp_path / "lib"))
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["kept_user_genre"] == len(files)  # the user's genre, wherever it is stored
    assert all(ffprobe_genre(p) == "Chanson" for p in files.values())

    out = run_cli(settings, "scan", "--force", "--overwrite", "--json", str(tmp_path / "lib"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tagged"] == len(files)
    for fmt, path in files.items():
        written = tags.read(path, fmt)["genre"]
        assert len(written) == 1 and genre_id(written[0]) is not None, fmt
        assert plain_genre(path, fmt) == written and ffprobe_genre(path) == written[0], fmt
        assert tags.audio_fingerprint(path, fmt) == before[fmt][2], fmt
    info = dict(riff_info(files["wav"]))
    assert info["IGNR"] == tags.read(files["wav"], "wav")["genre"][0].encode() + b"\x00"
    assert info["INAM"] == "Été".encode() + b"\x00" and info["IART"] == "Zoë".encode() + b"\x00"

    undone = run_cli(settings, "undo", "--json")
    assert undone.returncode == 0, undone.stderr
    assert [r["status"] for r in json.loads(undone.stdout)] == ["restored"] * len(files)
    for fmt, path in files.items():
        assert (tags.read(path, fmt), all_tags(path, fmt), tags.audio_fingerprint(path, fmt)) == before[fmt], fmt
        assert ffprobe_genre(path) == "Chanson", fmt
    # every chunk of the WAV as it was, byte for byte (but the id3 chunk mutagen leaves, empty)
    assert [(c, raw) for c, _, raw in riff_chunks(files["wav"]) if c != b"id3 "] == \
        [(c, raw) for c, _, raw in wav_chunks]


# ---------------------------------------------------------------- the RIFF INFO list, byte by byte

def _entry(cid: bytes, text: bytes) -> bytes:
    return cid + len(text).to_bytes(4, "little") + text + (b"\x00" if len(text) & 1 else b"")


def _wav(path, before_data: list[bytes], after_data: list[bytes]):
    """Rewrite a WAV made by ffmpeg with these chunks before and after its ``data`` chunk."""
    chunks = riff_chunks(path)
    fmt_chunk = next(raw for c, _, raw in chunks if c == b"fmt ")
    data = next(raw for c, _, raw in chunks if c == b"data")
    body = b"WAVE" + fmt_chunk + b"".join(before_data) + data + b"".join(after_data)
    path.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)


def _list(*entries: bytes) -> bytes:
    body = b"INFO" + b"".join(entries)
    return b"LIST" + len(body).to_bytes(4, "little") + body


BEXT = b"bext" + (5).to_bytes(4, "little") + b"odd!!" + b"\x00"  # an odd-sized chunk and its pad byte
INFO_CASES = {
    # an INFO list with other entries (odd sizes: pad bytes) and the user's genre, before the audio
    "info-before-data": ([BEXT, _list(_entry(b"INAM", b"Song\x00"), _entry(b"IGNR", b"Chanson\x00"),
                                      _entry(b"IART", b"Zo\xc3\xab\x00"))], []),
    # no genre in it, and after the audio
    "info-after-data": ([BEXT], [_list(_entry(b"INAM", b"Song\x00"), _entry(b"ICMT", b"a comment\x00"))]),
    "no-info": ([BEXT], []),
}


@pytest.mark.parametrize("case", list(INFO_CASES))
def test_the_info_genre_is_written_with_every_other_byte_kept_and_undone_exactly(audio_factory, case):
    path = audio_factory("wav", seconds=3)
    _wav(path, *INFO_CASES[case])
    original = path.read_bytes()
    samples, audio = decode(path, "wav"), tags.audio_fingerprint(path, "wav")
    previous = tags.read(path, "wav")
    users = b"Chanson" in original
    assert previous["info_genre"] == (["Chanson"] if users else [])
    assert record.is_users_genre(previous) == users

    wanted = tags.stored("wav", {"genre": ["Jazz; Blues"], "confidence": ["0.912"], "model": ["m 1"]})
    assert wanted["info_genre"] == ["Jazz; Blues"]
    tags.write(path, "wav", wanted)
    assert tags.read(path, "wav") == wanted and ffprobe_genre(path) == "Jazz; Blues"
    chunks = riff_chunks(path)
    data = path.read_bytes()
    assert int.from_bytes(data[4:8], "little") == len(data) - 8  # the RIFF size follows
    assert all(offset % 2 == 0 for _, offset, _ in chunks)  # word-aligned, pad bytes kept
    before_chunks = riff_chunks(original)
    keep = [(c, raw) for c, _, raw in before_chunks if c != b"LIST"]
    assert [(c, raw) for c, _, raw in chunks if c not in (b"LIST", b"id3 ")] == keep  # data, bext: as they were
    entries = riff_info(path)
    assert ("IGNR", b"Jazz; Blues\x00") in entries
    assert [e for e in entries if e[0] != "IGNR"] == [e for e in riff_info(original) if e[0] != "IGNR"]
    if case == "no-info":  # a new list goes before the audio
        assert [c for c, _, _ in chunks][:3] == [b"fmt ", b"bext", b"LIST"]
    assert tags.audio_fingerprint(path, "wav") == audio and (decode(path, "wav") == samples).all()

    tags.write(path, "wav", previous)  # undo
    assert tags.read(path, "wav") == previous
    assert [(c, raw) for c, _, raw in riff_chunks(path) if c != b"id3 "] == \
        [(c, raw) for c, _, raw in before_chunks]  # the INFO list, or its absence, byte for byte
    assert ffprobe_genre(path) == ("Chanson" if users else None)
    assert tags.audio_fingerprint(path, "wav") == audio


def test_an_info_genre_that_cannot_be_stored_is_refused_before_anything_is_written(audio_factory):
    from tagger.errors import TagWriteError

    path = audio_factory("wav", seconds=2)
    original = path.read_bytes()
    with pytest.raises(TagWriteError, match="RIFF INFO text cannot contain NUL"):
        tags.write(path, "wav", {"info_genre": ["a\x00b"]})
    assert path.read_bytes() == original and not [p for p in os.listdir(path.parent) if tags.TEMP_MARK in p]


def test_which_formats_list_several_genres():
    assert {fmt: tags.lists_genres(fmt) for fmt in FORMATS} == {fmt: SEVERAL[fmt] == "list" for fmt in FORMATS}


def test_a_wav_change_recorded_without_its_info_genre_leaves_the_info_list_alone(audio_factory):
    """A change an older tagger recorded (three fields, no info_genre) is still the file's state,
    and writing its ``before`` back (an undo) does not touch the INFO list it never wrote."""
    path = audio_factory("wav", seconds=2, metadata={"genre": "Chanson"})
    old_before = {"genre": [], "confidence": [], "model": []}
    old_after = {"genre": ["Jazz"], "confidence": ["0.900"], "model": ["m 1"]}
    tags.write(path, "wav", old_after)  # as the older tagger wrote it: the ID3 chunk only
    current = tags.read(path, "wav")
    assert current["info_genre"] == ["Chanson"]
    assert tags.holds(current, old_after) and not tags.holds(current, old_before)
    tags.write(path, "wav", old_before)
    assert tags.read(path, "wav") == {**old_before, "info_genre": ["Chanson"]} and ffprobe_genre(path) == "Chanson"
