"""Real audio files of every supported format, for tests.

The signal is music-like (harmonic notes on a rhythm, a kick and hi-hat
noise, from a fixed seed) and encoded by ffmpeg, so decoders and taggers
meet what they meet in a library: real MP3/AAC/Vorbis/Opus frames, real
containers. Pre-existing tags and cover art are written with plain mutagen,
each format through its own mechanism (ID3 APIC, FLAC PICTURE block,
METADATA_BLOCK_PICTURE comment for Ogg/Opus, MP4 ``covr``).

Everything here is independent of ``tagger`` on purpose: the tests use
it to check tagger's writes from the outside.
"""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

FORMATS = ("mp3", "flac", "ogg", "opus", "m4a", "wav", "aiff")
SUFFIX = {"mp3": ".mp3", "flac": ".flac", "ogg": ".ogg", "opus": ".opus", "m4a": ".m4a",
          "wav": ".wav", "aiff": ".aiff"}
FAMILY = {"mp3": "id3", "wav": "id3", "aiff": "id3", "flac": "vorbis", "ogg": "vorbis",
          "opus": "vorbis", "m4a": "mp4"}

_FFMPEG_CODEC = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "128k", "-write_id3v2", "0"],
    "flac": ["-c:a", "flac"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "3"],
    "opus": ["-c:a", "libopus", "-b:a", "96k"],
    # moov before mdat: a tag that grows moov makes mutagen move the audio
    # and rewrite the chunk offsets, the hardest case for a tag writer
    "m4a": ["-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart"],
    "wav": ["-c:a", "pcm_s16le"],
    "aiff": ["-c:a", "pcm_s16be"],
}

#: tags a typical ripped track carries: unicode, multi-value, a custom field
SAMPLE_TAGS: dict[str, list[str]] = {
    "title": ["Été à Paris ♫"],
    "artist": ["Ærøskøbing Quartet", "Zoë Ünal"],
    "album": ["日本の歌"],
    "genre": ["Chanson"],
    "date": ["1999"],
    "musicbrainz_trackid": ["3f0e8c8e-6d1a-4a8e-9a44-0c5a1c3b2d7f"],
}

# logical tag name -> ID3 frame id / Vorbis key / MP4 atom; anything else
# goes into TXXX:<NAME>, <NAME> and ----:com.apple.iTunes:<NAME>
_ID3 = {"title": "TIT2", "artist": "TPE1", "album": "TALB", "genre": "TCON", "date": "TDRC",
        "composer": "TCOM"}
_MP4 = {"title": "\xa9nam", "artist": "\xa9ART", "album": "\xa9alb", "genre": "\xa9gen",
        "date": "\xa9day", "composer": "\xa9wrt"}


# ---------------------------------------------------------------- signals
def music_signal(seconds: float, sr: int = 44100, channels: int = 2, seed: int = 7,
                 kind: str = "music") -> np.ndarray:
    """A deterministic music-like signal, float32 of shape (frames, channels) in [-1, 1].

    ``kind``: "music" (harmonic notes from a minor pentatonic scale, eighth
    notes at 120 bpm, kick on the beat, hi-hat noise off the beat: synthesised
    music, which the default model calls electronic), "hum" (one 196 Hz harmonic tone with tremolo: no music any
    genre model knows), "tone" (one 440 Hz sine) or "silence".
    """
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    if kind == "silence":
        mono = np.zeros(n)
    elif kind == "tone":
        mono = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    elif kind == "hum":
        mono = sum(0.2 / h * np.sin(2 * np.pi * 196.0 * h * t) for h in range(1, 8)) * (1 + 0.3 * np.sin(2 * np.pi * 5 * t))
        mono /= max(1.0, np.abs(mono).max() / 0.9)
    elif kind == "music":
        rng = np.random.default_rng(seed)
        scale = 220.0 * 2 ** (np.array([0, 3, 5, 7, 10, 12]) / 12)
        step = 0.25  # eighth notes at 120 bpm
        mono = np.zeros(n)
        for k in range(int(np.ceil(seconds / step))):
            a, b = int(k * step * sr), min(n, int((k + 1) * step * sr))
            if a >= n:
                break
            tt = t[a:b] - t[a]
            f0 = scale[rng.integers(len(scale))]
            env = np.exp(-tt * 6.0) * (1 - np.exp(-tt * 200.0))
            note = sum(np.sin(2 * np.pi * f0 * h * tt) / h ** 1.5 for h in range(1, 7))
            mono[a:b] += 0.25 * env * note
            if k % 2 == 0:  # kick: a falling sine thump
                mono[a:b] += 0.5 * np.exp(-tt * 25.0) * np.sin(2 * np.pi * (50 + 80 * np.exp(-tt * 30)) * tt)
            else:  # hi-hat: short noise burst
                mono[a:b] += 0.08 * np.exp(-tt * 60.0) * rng.standard_normal(b - a)
        mono /= max(1.0, np.abs(mono).max() / 0.9)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    # slightly different channels (a delayed copy) so stereo is not dual mono
    out = np.stack([np.roll(mono, 37 * c) for c in range(channels)], axis=1)
    return out.astype(np.float32)


def make_png(width: int = 16, height: int = 16, seed: int = 1) -> bytes:
    """A real, valid RGB PNG image (a colour gradient with a seeded tint)."""
    rng = np.random.default_rng(seed)
    tint = rng.integers(0, 256, 3)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([(x * 255 // max(1, width - 1) + tint[0]) % 256,
                    (y * 255 // max(1, height - 1) + tint[1]) % 256,
                    np.full_like(x, tint[2])], axis=-1).astype(np.uint8)
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- files
def make_audio(dir: str | Path, fmt: str, name: str | None = None, seconds: float = 8.0,
               tags: dict[str, list[str]] | None = None, cover: bytes | None = None,
               sr: int = 44100, channels: int = 2, kind: str = "music",
               metadata: dict[str, str] | None = None) -> Path:
    """Encode :func:`music_signal` to ``fmt`` with ffmpeg, then add tags and cover with mutagen.

    ``metadata``: tags ffmpeg writes itself, by its names (``title``, ``artist``, ``genre``), the
    way its muxer does (a WAV's RIFF INFO list: ``INAM``, ``IART``, ``IGNR``).
    Returns the path of the new file ``dir/name`` (default ``<kind>.<ext>``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    path = dir / (name or f"{kind}{SUFFIX[fmt]}")
    signal = music_signal(seconds, sr, channels, kind=kind)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src.wav"
        sf.write(src, signal, sr, subtype="FLOAT")
        given = [a for k, v in (metadata or {}).items() for a in ("-metadata", f"{k}={v}")]
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), "-map_metadata", "-1", *given,
               "-fflags", "+bitexact", *_FFMPEG_CODEC[fmt], "-f", _muxer(fmt), str(path)]
        subprocess.run(cmd, check=True, capture_output=True)
    if tags or cover:
        add_tags(path, fmt, tags or {}, cover)
    return path


def _muxer(fmt: str) -> str:
    return {"m4a": "ipod", "opus": "ogg"}.get(fmt, fmt)


def add_tags(path: str | Path, fmt: str, tags: dict[str, list[str]], cover: bytes | None = None) -> None:
    """Write ``tags`` (logical name -> values) and a front cover with plain mutagen."""
    path = str(path)
    family = FAMILY[fmt]
    f = _open(path, fmt)
    if f.tags is None:
        f.add_tags()
    if family == "id3":
        from mutagen import id3

        for key, values in tags.items():
            if key in _ID3:
                f.tags.add(getattr(id3, _ID3[key])(encoding=3, text=list(values)))
            else:
                f.tags.add(id3.TXXX(encoding=3, desc=key.upper(), text=list(values)))
        if cover:
            f.tags.add(id3.APIC(encoding=3, mime=_mime(cover), type=3, desc="Cover", data=cover))
    elif family == "vorbis":
        for key, values in tags.items():
            f.tags[key.upper()] = list(values)
        if cover:
            pic = _flac_picture(cover)
            if fmt == "flac":
                f.add_picture(pic)
            else:
                f.tags["METADATA_BLOCK_PICTURE"] = [base64.b64encode(pic.write()).decode("ascii")]
    else:
        from mutagen.mp4 import AtomDataType, MP4Cover, MP4FreeForm

        for key, values in tags.items():
            if key in _MP4:
                f.tags[_MP4[key]] = list(values)
            else:
                f.tags[f"----:com.apple.iTunes:{key.upper()}"] = [
                    MP4FreeForm(v.encode("utf-8"), dataformat=AtomDataType.UTF8) for v in values]
        if cover:
            kind = MP4Cover.FORMAT_PNG if cover[:4] == b"\x89PNG" else MP4Cover.FORMAT_JPEG
            f.tags["covr"] = [MP4Cover(cover, imageformat=kind)]
    f.save()


def _mime(data: bytes) -> str:
    return "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"


def _flac_picture(data: bytes):
    from mutagen.flac import Picture

    pic = Picture()
    pic.type = 3
    pic.mime = _mime(data)
    pic.desc = "Cover"
    pic.data = data
    if data[:4] == b"\x89PNG":
        pic.width, pic.height = struct.unpack(">II", data[16:24])
        pic.depth = 24
    return pic


def _open(path: str, fmt: str):
    from mutagen.aiff import AIFF
    from mutagen.flac import FLAC
    from mutagen.mp3 import MP3
    from mutagen.mp4 import MP4
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis
    from mutagen.wave import WAVE

    return {"mp3": MP3, "flac": FLAC, "ogg": OggVorbis, "opus": OggOpus, "m4a": MP4,
            "wav": WAVE, "aiff": AIFF}[fmt](path)


class AudioFactory:
    """:func:`make_audio` with a cache: each distinct file is encoded once, then copied.

    ``cache`` is a directory shared by a whole test session; ``out`` is
    where the copies go (a test's ``tmp_path``).
    """

    def __init__(self, cache: str | Path, out: str | Path):
        self.cache, self.out = Path(cache), Path(out)

    def __call__(self, fmt: str, name: str | None = None, seconds: float = 8.0,
                 tags: dict[str, list[str]] | None = None, cover: bytes | None = None,
                 sr: int = 44100, channels: int = 2, kind: str = "music",
                 metadata: dict[str, str] | None = None) -> Path:
        key = repr((fmt, seconds, sorted((tags or {}).items()), cover, sr, channels, kind)
                   + ((sorted(metadata.items()),) if metadata else ()))
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        cached = self.cache / f"{digest}{SUFFIX[fmt]}"
        if not cached.exists():
            made = make_audio(self.cache, fmt, f".{digest}.partial{SUFFIX[fmt]}", seconds, tags,
                              cover, sr, channels, kind, metadata)
            made.replace(cached)
        dest = self.out / (name or f"{kind}{SUFFIX[fmt]}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, dest)
        return dest


# ---------------------------------------------------------------- bad files
def zero_byte(dir: str | Path, name: str = "empty.mp3") -> Path:
    path = Path(dir) / name
    path.write_bytes(b"")
    return path


def truncated(src: str | Path, dest: str | Path, fraction: float = 0.3) -> Path:
    """A copy of ``src`` cut after ``fraction`` of its bytes (a broken download)."""
    data = Path(src).read_bytes()
    Path(dest).write_bytes(data[: max(1, int(len(data) * fraction))])
    return Path(dest)


def text_as_audio(dir: str | Path, name: str = "notes.mp3") -> Path:
    path = Path(dir) / name
    path.write_text("These are not the sounds you are looking for.\n" * 20, encoding="utf-8")
    return path


# ---------------------------------------------------------------- reading back
def decode(path: str | Path, fmt: str) -> np.ndarray:
    """Decoded samples, float32: soundfile gives (frames, channels); for M4A ffmpeg's
    interleaved samples come as one column (n, 1), which compares just as well."""
    if fmt == "m4a":
        out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
                              "-f", "f32le", "-"], check=True, capture_output=True).stdout
        return np.frombuffer(out, dtype=np.float32).reshape(-1, 1)
    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return data


def all_tags(path: str | Path, fmt: str) -> dict[str, object]:
    """Every tag of the file as plain mutagen sees it: key -> comparable value.

    Covers ID3 frames (APIC included), Vorbis comments (in order, with
    METADATA_BLOCK_PICTURE), FLAC picture blocks and MP4 atoms (``covr``).
    """
    f = _open(str(path), fmt)
    out: dict[str, object] = {}
    family = FAMILY[fmt]
    if f.tags is not None:
        if family == "id3":
            for frame in f.tags.values():
                out[frame.HashKey] = repr(frame)
        elif family == "vorbis":
            for k, v in f.tags:
                out.setdefault(k.upper(), []).append(v)
        else:
            for k, v in f.tags.items():
                out[k] = [(type(x).__name__, bytes(x) if isinstance(x, bytes) else x,
                           getattr(x, "imageformat", None), getattr(x, "dataformat", None)) for x in v]
    if fmt == "flac":
        out["<pictures>"] = [(p.type, p.mime, p.desc, p.data) for p in f.pictures]
    return out


def cover_of(path: str | Path, fmt: str) -> bytes | None:
    """The front cover image bytes, read through the format's own mechanism."""
    from mutagen.flac import Picture

    f = _open(str(path), fmt)
    family = FAMILY[fmt]
    if fmt == "flac":
        return f.pictures[0].data if f.pictures else None
    if f.tags is None:
        return None
    if family == "id3":
        frames = f.tags.getall("APIC")
        return frames[0].data if frames else None
    if family == "vorbis":
        blocks = f.tags.get("METADATA_BLOCK_PICTURE") or []
        return Picture(base64.b64decode(blocks[0])).data if blocks else None
    covers = f.tags.get("covr") or []
    return bytes(covers[0]) if covers else None


# ---------------------------------------------------------------- what players see
def ffprobe_genre(path: str | Path) -> str | None:
    """The genre FFmpeg shows for a file (players built on it show the same): ``ffprobe
    -show_entries format_tags=genre``, or the stream's tags where the container keeps them per
    stream (Ogg's Vorbis comments). Several values of one field FFmpeg joins with ";"; None: no genre."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format_tags=genre:stream_tags=genre",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    for tags in [doc.get("format", {}).get("tags", {})] + [s.get("tags", {}) for s in doc.get("streams", [])]:
        for key, value in tags.items():
            if key.lower() == "genre":
                return value
    return None


def riff_chunks(path: str | Path | bytes) -> list[tuple[bytes, int, bytes]]:
    """A WAV file's top-level chunks (the file, or its bytes) as (id, offset, the chunk's bytes:
    header, body, pad byte)."""
    data = path if isinstance(path, bytes) else Path(path).read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    out, at = [], 12
    while at + 8 <= len(data):
        n = int.from_bytes(data[at + 4:at + 8], "little")
        end = at + 8 + n + (n & 1)
        out.append((data[at:at + 4], at, data[at:end]))
        at = end
    return out


def riff_info(path: str | Path | bytes) -> list[tuple[str, bytes]]:
    """The entries of a WAV's LIST/INFO chunks (the file, or its bytes), in order, as (id, the
    stored text bytes)."""
    out = []
    for cid, _, raw in riff_chunks(path):
        if cid == b"LIST" and raw[8:12] == b"INFO":
            body, at = raw[12:8 + int.from_bytes(raw[4:8], "little")], 0
            while at + 8 <= len(body):
                n = int.from_bytes(body[at + 4:at + 8], "little")
                out.append((body[at:at + 4].decode("ascii"), body[at + 8:at + 8 + n]))
                at += 8 + n + (n & 1)
    return out
