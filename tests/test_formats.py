"""tagger.formats: the extension says what a file should be, its first bytes confirm it."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

import audiofiles
from audiofiles import FORMATS, SUFFIX
from tagger import formats
from tagger.errors import UnsupportedFormat


@pytest.mark.parametrize("fmt", FORMATS)
def test_real_files_are_recognised(audio_factory, fmt):
    path = audio_factory(fmt, seconds=1.0, tags=audiofiles.SAMPLE_TAGS, cover=audiofiles.make_png())
    assert formats.expected_format(path) == fmt
    assert formats.sniff(path) == fmt
    assert formats.confirm(path) == fmt


def test_every_format_has_an_extension_and_case_does_not_matter():
    assert set(formats.EXTENSIONS.values()) == set(FORMATS) == set(formats.FORMATS)
    assert formats.expected_format("A/B/Song.MP3") == "mp3"
    assert formats.expected_format("cover.jpg") is None


@pytest.mark.parametrize("sr", [8000, 22050, 48000])
def test_mp3_at_every_mpeg_version_is_recognised(audio_factory, sr):
    # 8 kHz is MPEG-2.5, 22.05 kHz MPEG-2, 48 kHz MPEG-1: three frame-size formulas
    path = audio_factory("mp3", f"sr{sr}.mp3", seconds=1.0, sr=sr, channels=1)
    assert formats.sniff(path) == "mp3"


def test_mp3_behind_a_large_id3_tag(audio_factory):
    cover = audiofiles.make_png(200, 200)  # a tag far larger than the bytes sniffed at once
    path = audio_factory("mp3", seconds=1.0, tags=audiofiles.SAMPLE_TAGS, cover=cover)
    assert path.read_bytes()[:3] == b"ID3" and len(cover) > formats.HEAD_BYTES
    assert formats.confirm(path) == "mp3"


def test_text_file_named_mp3(tmp_path):
    path = audiofiles.text_as_audio(tmp_path, "song.mp3")
    assert formats.sniff(path) is None
    with pytest.raises(UnsupportedFormat, match="not MP3 audio"):
        formats.confirm(path)


def test_zero_byte_file(tmp_path):
    path = audiofiles.zero_byte(tmp_path, "empty.flac")
    assert formats.sniff(path) is None
    with pytest.raises(UnsupportedFormat, match="empty file"):
        formats.confirm(path)


def test_directory_named_like_audio(tmp_path):
    (tmp_path / "album.flac").mkdir()
    with pytest.raises(UnsupportedFormat, match="directory"):
        formats.confirm(tmp_path / "album.flac")


@pytest.mark.parametrize("fmt,name,says", [("flac", "wrong.mp3", "FLAC, not MP3"),
                                           ("opus", "wrong.ogg", "Opus, not Ogg Vorbis"),
                                           ("wav", "wrong.aiff", "WAV, not AIFF")])
def test_content_that_contradicts_the_extension(audio_factory, fmt, name, says):
    path = audio_factory(fmt, name, seconds=1.0)
    assert formats.sniff(path) == fmt
    with pytest.raises(UnsupportedFormat, match=says):
        formats.confirm(path)


def test_aac_extension_holding_mp4_is_accepted_raw_adts_is_explained(audio_factory, tmp_path):
    mp4 = audio_factory("m4a", "mp4inside.aac", seconds=1.0)
    assert formats.confirm(mp4) == "m4a"
    adts = tmp_path / "raw.aac"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(mp4), "-c", "copy", "-f", "adts",
                    str(adts)], check=True)
    assert formats.sniff(adts) is None
    with pytest.raises(UnsupportedFormat, match="ADTS"):
        formats.confirm(adts)


def test_truncated_files(audio_factory, tmp_path):
    mp3 = audio_factory("mp3", seconds=2.0, tags=audiofiles.SAMPLE_TAGS, cover=audiofiles.make_png(64, 64))
    # cut after a few frames: still MP3 (the decoder reports what is missing)
    assert formats.sniff(audiofiles.truncated(mp3, tmp_path / "half.mp3", 0.5)) == "mp3"
    # cut inside the ID3 tag: no audio at all
    inside_tag = audiofiles.truncated(mp3, tmp_path / "tag-only.mp3", 0.01)
    with pytest.raises(UnsupportedFormat, match="not MP3"):
        formats.confirm(inside_tag)
    flac = audio_factory("flac", seconds=2.0)
    assert formats.sniff(audiofiles.truncated(flac, tmp_path / "half.flac", 0.5)) == "flac"


def test_random_bytes_are_not_taken_for_mp3(tmp_path):
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(300):
        data = bytearray(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        data[0], data[1] = 0xFF, 0xFB  # one plausible MPEG-1 layer III header start
        path = tmp_path / f"noise{i}.mp3"
        path.write_bytes(bytes(data))
        hits += formats.sniff(path) == "mp3"
    assert hits <= 3  # a second header exactly one frame later is rarely an accident


def test_unknown_extension(tmp_path):
    path = tmp_path / "track.wma"
    path.write_bytes(b"\x30\x26\xb2\x75" * 10)
    with pytest.raises(UnsupportedFormat, match=r"\.wma is not a supported audio extension"):
        formats.confirm(path)


def test_every_suffix_used_by_the_fixtures_maps_back():
    for fmt, suffix in SUFFIX.items():
        assert formats.EXTENSIONS[suffix] == fmt
