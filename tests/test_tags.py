"""tagger.tags on real encoded files of every format, checked from outside with plain mutagen."""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import audiofiles
from audiofiles import FAMILY, FORMATS, SAMPLE_TAGS, all_tags, cover_of, decode
from tagger import tags
from tagger.tags import fields as tag_fields, writing as tag_writing
from tagger.errors import FileChanged, FileMissing, TagWriteError

COVER = audiofiles.make_png(24, 24, seed=3)
NEW = {"genre": ["Jazz"], "confidence": ["0.873"], "model": ["deep-cnn 1.0.0"]}

# Where each field must land, as the issue states it; read with plain mutagen.
PLAIN_KEYS = {
    "id3": {"genre": "TCON", "confidence": "TXXX:TAGGER_CONFIDENCE", "model": "TXXX:TAGGER_MODEL"},
    "vorbis": {"genre": "GENRE", "confidence": "TAGGER_CONFIDENCE", "model": "TAGGER_MODEL"},
    "mp4": {"genre": "\xa9gen", "confidence": "----:com.apple.iTunes:TAGGER_CONFIDENCE",
            "model": "----:com.apple.iTunes:TAGGER_MODEL"},
}


def plain_fields(path: Path, fmt: str) -> dict[str, list[str]]:
    """Our three fields read with mutagen alone, without tagger's field table."""
    f = audiofiles._open(str(path), fmt)
    family = FAMILY[fmt]
    out = {}
    for field, key in PLAIN_KEYS[family].items():
        if f.tags is None:
            out[field] = []
        elif family == "id3":
            out[field] = [t for frame in f.tags.getall(key) for t in frame.text]
        elif family == "vorbis":
            out[field] = list(f.tags[key]) if key in f.tags else []
        else:
            out[field] = [bytes(v).decode() if key.startswith("----") else v for v in f.tags.get(key, [])]
    return out


def as_read(fmt: str, values: dict[str, list[str]]) -> dict[str, list[str]]:
    """What ``tags.read`` gives for a file holding ``values``: for a WAV also its RIFF INFO genre
    (``info_genre``; tagger/tags/riff.py), which a write leaves alone unless given it (none here)."""
    return {**values, "info_genre": list(values.get("info_genre", []))} if fmt == "wav" else values


def others(snapshot: dict, fmt: str) -> dict:
    ours = set(PLAIN_KEYS[FAMILY[fmt]].values())
    return {k: v for k, v in snapshot.items() if k not in ours}


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if tags.TEMP_MARK in p.name]


@pytest.fixture
def tagged(audio_factory):
    """A 3 s file with a user's tags (genre "Chanson", unicode, multi-value) and cover art."""
    def make(fmt):
        return audio_factory(fmt, seconds=3.0, tags=SAMPLE_TAGS, cover=COVER)
    return make


# ---------------------------------------------------------------- every format
@pytest.mark.parametrize("fmt", FORMATS)
def test_write_lands_in_the_formats_own_fields(tagged, fmt):
    path = tagged(fmt)
    result = tags.write(path, fmt, NEW)
    assert plain_fields(path, fmt) == NEW
    assert result.changed
    assert result.before == as_read(fmt, {"genre": ["Chanson"], "confidence": [], "model": []})
    assert result.after == as_read(fmt, NEW) == tags.read(path, fmt)
    assert result.stat == tags.FileStat.of(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_other_tags_cover_and_audio_unchanged(tagged, fmt):
    path = tagged(fmt)
    tags_before, samples_before = all_tags(path, fmt), decode(path, fmt)
    fingerprint = tags.audio_fingerprint(path, fmt)
    assert cover_of(path, fmt) == COVER
    tags.write(path, fmt, NEW)
    assert others(all_tags(path, fmt), fmt) == others(tags_before, fmt)
    assert {"id3": "TIT2", "vorbis": "TITLE", "mp4": "\xa9nam"}[FAMILY[fmt]] in all_tags(path, fmt)
    assert cover_of(path, fmt) == COVER
    samples_after = decode(path, fmt)
    assert samples_after.shape == samples_before.shape and samples_after.size > 0
    assert np.array_equal(samples_after, samples_before)
    assert tags.audio_fingerprint(path, fmt) == fingerprint


@pytest.mark.parametrize("fmt", FORMATS)
def test_restoring_previous_values_gives_back_the_file_tags_exactly(tagged, fmt):
    path = tagged(fmt)
    snapshot = all_tags(path, fmt)
    previous = tags.read(path, fmt)
    assert previous == as_read(fmt, {"genre": ["Chanson"], "confidence": [], "model": []})
    tags.write(path, fmt, NEW)
    tags.write(path, fmt, {"genre": ["Rock", "Pop"], "confidence": ["0.5"]})  # a second scan
    undo = tags.write(path, fmt, previous)
    assert undo.before == as_read(fmt, {"genre": ["Rock", "Pop"], "confidence": ["0.5"], "model": NEW["model"]})
    # the user's genre is back, our fields are gone
    assert plain_fields(path, fmt) == {"genre": ["Chanson"], "confidence": [], "model": []}
    assert all_tags(path, fmt) == snapshot


@pytest.mark.parametrize("fmt", FORMATS)
def test_undo_on_an_untagged_file_removes_our_fields(audio_factory, fmt):
    path = audio_factory(fmt, seconds=2.0)
    previous = tags.read(path, fmt)
    assert previous == as_read(fmt, {"genre": [], "confidence": [], "model": []})
    tags.write(path, fmt, tags.stored(fmt, NEW))  # as a scan writes it: a WAV's INFO genre too
    tags.write(path, fmt, previous)
    assert tags.read(path, fmt) == previous
    assert plain_fields(path, fmt) == {"genre": [], "confidence": [], "model": []}
    assert others(all_tags(path, fmt), fmt) == others(all_tags(audio_factory(fmt, "again", seconds=2.0), fmt), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_changed_file_is_not_written(tagged, fmt):
    path = tagged(fmt)
    seen = tags.FileStat.of(path)
    os.utime(path, ns=(seen.mtime_ns, seen.mtime_ns + 1_000_000_000))  # touched after analysis
    data = path.read_bytes()
    with pytest.raises(FileChanged):
        tags.write(path, fmt, NEW, expect=seen)
    with pytest.raises(FileChanged):
        tags.write(path, fmt, NEW, expect=tags.FileStat(seen.size + 1, tags.FileStat.of(path).mtime_ns))
    assert path.read_bytes() == data
    tags.write(path, fmt, NEW, expect=tags.FileStat.of(path))  # the current stat is accepted
    assert plain_fields(path, fmt) == NEW


def test_audio_rewritten_by_another_program_during_a_write_is_said_so(tagged, monkeypatch):
    """The copy is compared with the original as it is at the check: when another program has
    rewritten the original's audio meanwhile, the write says the file changed, and leaves that
    program's file in place."""
    path = tagged("flac")
    copy_file = tag_writing.copy_file

    def copy_then_another_program_writes(src, out, size):
        copy_file(src, out, size)
        data = bytearray(path.read_bytes())
        data[len(data) * 2 // 3] ^= 0x10
        path.write_bytes(bytes(data))

    monkeypatch.setattr(tag_writing, "copy_file", copy_then_another_program_writes)
    with pytest.raises(FileChanged):
        tags.write(path, "flac", NEW)
    theirs = path.read_bytes()
    assert plain_fields(path, "flac") != NEW and not list(path.parent.glob(f".*{tags.TEMP_MARK}*"))
    monkeypatch.undo()
    tags.write(path, "flac", NEW)
    assert plain_fields(path, "flac") == NEW and theirs != path.read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_only_file_is_refused_and_untouched(tagged, fmt):
    path = tagged(fmt)
    data = path.read_bytes()
    path.chmod(0o444)
    with pytest.raises(TagWriteError, match="read-only"):
        tags.write(path, fmt, NEW)
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert no_temp_files(path.parent)


@pytest.mark.parametrize("fmt", FORMATS)
def test_writing_an_unchanged_value_does_not_touch_the_file(tagged, fmt):
    path = tagged(fmt)
    before = tags.FileStat.of(path)
    result = tags.write(path, fmt, {"genre": ["Chanson"]})
    assert not result.changed and tags.FileStat.of(path) == before == result.stat


@pytest.mark.parametrize("fmt", FORMATS)
def test_fingerprint_sees_one_flipped_audio_byte(audio_factory, fmt):
    path = audio_factory(fmt, seconds=2.0)
    fingerprint = tags.audio_fingerprint(path, fmt)
    data = bytearray(path.read_bytes())
    data[len(data) * 2 // 3] ^= 0x10  # well inside the audio of every format here
    flipped = path.with_name("flipped" + path.suffix)
    flipped.write_bytes(bytes(data))
    assert tags.audio_fingerprint(flipped, fmt) != fingerprint
    assert not tags.same_payload(path, flipped, fmt) and tags.same_payload(path, path, fmt)


@pytest.mark.parametrize("fmt", ["ogg", "opus"])
def test_an_ogg_payload_is_its_packets_however_the_headers_are_paged(audio_factory, fmt):
    """A comment large enough to be cut into several pages (mutagen then renumbers every page
    of the file, and every page's checksum changes) leaves the payload as it was; a packet of
    the audio that changes does not."""
    import mutagen

    path = audio_factory(fmt, seconds=3.0)
    fingerprint = tags.audio_fingerprint(path, fmt)
    paged = path.with_name("paged" + path.suffix)
    shutil.copyfile(path, paged)
    f = mutagen.File(paged)
    f["comment"] = ["x" * 20000]
    f.save()
    def last_page_number(p: Path) -> int:
        data = p.read_bytes()
        at = data.rindex(b"OggS")
        return int.from_bytes(data[at + 18:at + 22], "little")

    assert last_page_number(paged) > last_page_number(path)  # more header pages: every page renumbered
    assert tags.audio_fingerprint(paged, fmt) == fingerprint and tags.same_payload(path, paged, fmt)


# ---------------------------------------------------------------- safety details
def test_read_only_folder_is_refused(tagged, tmp_path):
    path = tagged("flac")
    data = path.read_bytes()
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(TagWriteError, match="folder .* read-only"):
            tags.write(path, "flac", NEW)
    finally:
        tmp_path.chmod(0o755)
    assert path.read_bytes() == data and no_temp_files(tmp_path)


def test_permission_bits_kept_and_symlink_followed(tagged, tmp_path):
    path = tagged("mp3")
    path.chmod(0o640)
    link = tmp_path / "link.mp3"
    link.symlink_to(path)
    tags.write(link, "mp3", NEW)
    assert link.is_symlink() and plain_fields(path, "mp3") == NEW
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_hard_linked_file_is_refused(tagged, tmp_path):
    path = tagged("flac")
    os.link(path, tmp_path / "other-name.flac")
    with pytest.raises(TagWriteError, match="hard links"):
        tags.write(path, "flac", NEW)


def test_missing_file(tmp_path):
    with pytest.raises(FileMissing):
        tags.write(tmp_path / "gone.mp3", "mp3", NEW)


@pytest.mark.parametrize("make", ["zero", "truncated_mp3", "truncated_flac", "text"])
def test_bad_files_give_a_one_line_error_and_stay_untouched(audio_factory, tmp_path, make):
    if make == "zero":
        path, fmt = audiofiles.zero_byte(tmp_path), "mp3"
    elif make == "text":
        path, fmt = audiofiles.text_as_audio(tmp_path), "mp3"
    else:
        fmt = make.split("_")[1]
        good = audio_factory(fmt, seconds=3.0, tags=SAMPLE_TAGS, cover=COVER)
        # cut inside the tag block: the container is broken, not just short
        path = audiofiles.truncated(good, tmp_path / f"cut.{fmt}", fraction=0.004)
    data = path.read_bytes()
    with pytest.raises(TagWriteError) as err:
        tags.write(path, fmt, NEW)
    assert "\n" not in str(err.value) and str(err.value)
    assert path.read_bytes() == data and no_temp_files(tmp_path)


def test_unstorable_values_are_refused_before_anything_is_written(tagged):
    path = tagged("mp3")
    data = path.read_bytes()
    for bad in (["17"], [""], ["a\x00b"], ["Rock\nRoll"]):
        with pytest.raises(TagWriteError, match="cannot store genre"):
            tags.write(path, "mp3", {"genre": bad})
    assert path.read_bytes() == data
    with pytest.raises(ValueError):
        tags.write(path, "mp3", {"mood": ["calm"]})
    with pytest.raises(TypeError):
        tags.write(path, "mp3", {"genre": "Jazz"})


def test_leading_parenthesis_in_an_id3_genre_stays_literal(tagged):
    path = tagged("mp3")
    tags.write(path, "mp3", {"genre": ["(17) live", "(Remix)"]})
    assert tags.read(path, "mp3")["genre"] == ["(17) live", "(Remix)"]


def test_verification_catches_changed_audio_and_tags(tagged, tmp_path):
    """The read-back check itself, on a copy whose audio or tags really differ."""
    path = tagged("flac")
    family = tag_fields.FAMILIES["vorbis"]
    original = audiofiles._open(str(path), "flac")
    current = tags.read(path, "flac")
    other_tags = family.others(original)
    kept = tmp_path / "kept.flac"
    shutil.copyfile(path, kept)
    tag_writing._verify(path, "flac", family, current, other_tags, kept)  # the file itself passes

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged = tmp_path / "damaged.flac"
    damaged.write_bytes(bytes(data))
    with pytest.raises(TagWriteError, match="audio data changed"):
        tag_writing._verify(damaged, "flac", family, current, other_tags, kept)

    retitled = tmp_path / "retitled.flac"
    shutil.copyfile(path, retitled)
    audiofiles.add_tags(retitled, "flac", {"title": ["Another title"]})
    with pytest.raises(TagWriteError, match="other tags changed .*TITLE"):
        tag_writing._verify(retitled, "flac", family, current, other_tags, kept)


def test_id3v23_file_stays_v23(tagged):
    from mutagen.id3 import ID3

    path = tagged("mp3")
    ID3(path).save(path, v2_version=3)
    snapshot = all_tags(path, "mp3")
    previous = tags.read(path, "mp3")
    tags.write(path, "mp3", {"genre": ["Jazz", "Blues"], "model": ["m"]})
    assert ID3(path).version[:2] == (2, 3)
    assert tags.read(path, "mp3")["genre"] == ["Jazz", "Blues"]
    tags.write(path, "mp3", previous)
    assert all_tags(path, "mp3") == snapshot


_WRITER_LOOP = """
import sys
from tagger import tags
path, fmt = sys.argv[1], sys.argv[2]
print("ready", flush=True)
i = 0
while True:
    i += 1
    tags.write(path, fmt, {"genre": ["G%d" % i] * (1 + i % 7), "model": ["m" * (i % 500)]})
"""


@pytest.mark.parametrize("fmt", ["flac", "m4a"])
def test_kill_9_during_writes_leaves_a_whole_file(tagged, fmt):
    path = tagged(fmt)
    fingerprint = tags.audio_fingerprint(path, fmt)
    snapshot = others(all_tags(path, fmt), fmt)
    rng = np.random.default_rng(0)
    written = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER_LOOP, str(path), fmt],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, 0.4)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        # whatever moment the kill hit, the file is complete: old or new tags, same audio
        genre = tags.read(path, fmt)["genre"]
        assert genre == ["Chanson"] or (genre and genre[0].startswith("G"))
        written += genre != ["Chanson"]
        assert tags.audio_fingerprint(path, fmt) == fingerprint
        assert others(all_tags(path, fmt), fmt) == snapshot
        for leftover in path.parent.glob(f"*{tags.TEMP_MARK}*"):
            leftover.unlink()  # a killed write may leave its temporary copy, never a broken original
    assert written, "the writer was never killed after a write; the test proved nothing"


# ---------------------------------------------------------------- property test
# Values any tool may have left in a file, and values we may be asked to write.
# Excluded by the writer and therefore asserted as a clean refusal, not filtered:
# ID3 cannot store empty strings or NUL, and mutagen rewrites some genre texts
# ("17" -> "Rock", "CR" -> "Cover", text after a line break). Vorbis comments
# and MP4 atoms store every string (surrogates are not text and never generated).
def field_values(min_text: int) -> st.SearchStrategy:
    values = st.lists(st.text(min_size=min_text, max_size=12), max_size=3)
    return st.fixed_dictionaries({"genre": values, "confidence": values, "model": values})


user_tags = st.fixed_dictionaries({"title": st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=2),
                                   "artist": st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=3)})
HYPOTHESIS_FORMATS = list(FORMATS)
# more examples for a deeper search: TAGGER_PROPERTY_EXAMPLES=1000 pytest -k survive


def _existing(fmt: str, ours: dict, theirs: dict) -> dict[str, list[str]]:
    """Logical tag names for audiofiles.add_tags, ours written the way another tool would."""
    out = dict(theirs)
    if ours["genre"]:
        out["genre"] = ours["genre"]
    for field in ("confidence", "model"):
        if ours[field]:
            out[f"tagger_{field}"] = ours[field]
    if FAMILY[fmt] == "id3":  # mutagen itself cannot put these into ID3 text
        from mutagen.id3 import TCON

        out = {k: [v.replace("\x00", "") for v in vals] for k, vals in out.items()}
        out = {k: [v for v in vals if v] for k, vals in out.items()}
        # a genre frame that mutagen reads as no genre at all counts as absent (tagger.tags doc)
        if "genre" in out and not TCON(encoding=3, text=out["genre"]).genres:
            del out["genre"]
        out = {k: vals for k, vals in out.items() if vals}
    return out


@pytest.mark.parametrize("fmt", HYPOTHESIS_FORMATS)
@settings(max_examples=int(os.environ.get("TAGGER_PROPERTY_EXAMPLES", 25)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_tags_survive_a_write_and_its_undo(audio_cache, fmt, data):
    # empty strings are mostly left out for ID3, which refuses them (covered above)
    min_text = 1 if FAMILY[fmt] == "id3" else 0
    existing = data.draw(field_values(0), "existing")
    theirs = data.draw(user_tags, "theirs")
    new = data.draw(field_values(min_text), "new")
    base = audiofiles.AudioFactory(audio_cache, audio_cache / "hypothesis")(fmt, f"base-{fmt}", seconds=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"track{audiofiles.SUFFIX[fmt]}"
        shutil.copyfile(base, path)
        audiofiles.add_tags(path, fmt, _existing(fmt, existing, theirs))
        snapshot = all_tags(path, fmt)
        previous = tags.read(path, fmt)
        data = path.read_bytes()
        try:
            tags.write(path, fmt, new)
        except TagWriteError as e:
            assert FAMILY[fmt] == "id3", f"{fmt} refused {new!r}: {e}"
            assert "cannot store" in str(e)
            assert path.read_bytes() == data
            return
        assert tags.read(path, fmt) == as_read(fmt, new)
        tags.write(path, fmt, previous)
        assert tags.read(path, fmt) == previous
        assert all_tags(path, fmt) == snapshot


def test_fragmented_mp4_is_written_and_its_audio_hashed(audio_factory, tmp_path):
    plain = audio_factory("m4a", seconds=3.0, tags=SAMPLE_TAGS)
    frag = tmp_path / "fragmented.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(plain), "-c", "copy", "-movflags",
                    "+frag_keyframe+empty_moov", "-f", "mp4", str(frag)], check=True)
    samples, fingerprint = decode(frag, "m4a"), tags.audio_fingerprint(frag, "m4a")
    tags.write(frag, "m4a", NEW)
    assert plain_fields(frag, "m4a") == NEW
    assert np.array_equal(decode(frag, "m4a"), samples)
    data = bytearray(frag.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside a fragment's media data
    frag.write_bytes(bytes(data))
    assert tags.audio_fingerprint(frag, "m4a") != fingerprint
