"""Which audio format a file is: by its name, confirmed by its first bytes.

A file is only handed to a decoder and to the tag writer when its content
agrees with its extension, so a text file named ``.mp3`` or a FLAC file
named ``.mp3`` is reported with a one-line reason instead of failing deep
inside mutagen or libsndfile.

``.aac``: a raw AAC stream (ADTS) has no container and therefore nowhere to
keep tags (mutagen reads it but cannot write tags to it). ``.aac`` is still
listed, expecting MP4 inside, because some tools name MP4 audio ``.aac``;
a real ADTS stream is reported as unsupported with that reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tagger.errors import UnsupportedFormat

@dataclass(frozen=True)
class Format:
    """Everything tagger knows about one audio format, in one place; every module looks it up here.

    The content check that goes with it (its magic bytes) is ``_identify`` below.
    """

    name: str  # tagger's name for it, stored in the database
    label: str  # how messages name it
    extensions: tuple[str, ...]  # lower case, with the dot; the first is the usual one
    decoder: str  # "soundfile": libsndfile, seeking; "av": PyAV first (libsndfile cannot, or seeks inexactly)
    tag_family: str  # how its tags are stored (tagger/tags/fields.py): "id3", "riff" (ID3 + RIFF INFO), "vorbis", "mp4"
    mutagen: str  # "module:Class" that opens it for tagging
    payload: str  # how its audio payload is found for the fingerprint: a key of tagger.tags' hashers


RECORDS: dict[str, Format] = {f.name: f for f in (
    Format("mp3", "MP3", (".mp3",), "soundfile", "id3", "mutagen.mp3:MP3", "mpeg"),
    Format("flac", "FLAC", (".flac",), "soundfile", "vorbis", "mutagen.flac:FLAC", "flac"),
    # libsndfile's seek lands some Ogg Vorbis windows hundreds of samples early; PyAV's is exact
    Format("ogg", "Ogg Vorbis", (".ogg", ".oga"), "av", "vorbis", "mutagen.oggvorbis:OggVorbis", "ogg"),
    Format("opus", "Opus", (".opus",), "soundfile", "vorbis", "mutagen.oggopus:OggOpus", "ogg"),
    # .aac only when it holds MP4: raw ADTS is refused (see the module docstring)
    Format("m4a", "MP4/M4A", (".m4a", ".m4b", ".mp4", ".aac"), "av", "mp4", "mutagen.mp4:MP4", "mp4"),
    # the genre also in the RIFF INFO list, which ffprobe and many players read over the ID3 chunk
    Format("wav", "WAV", (".wav",), "soundfile", "riff", "mutagen.wave:WAVE", "riff"),
    Format("aiff", "AIFF", (".aif", ".aiff", ".aifc"), "soundfile", "id3", "mutagen.aiff:AIFF", "aiff"),
)}

#: the formats tagger reads and tags
FORMATS = tuple(RECORDS)

#: extension (lower case, with the dot) -> the format its content must be
EXTENSIONS: dict[str, str] = {ext: f.name for f in RECORDS.values() for ext in f.extensions}

#: extensions of audio that training and evaluation may decode without tagging it
#: (GTZAN's originals are Sun .au)
READABLE_EXTENSIONS = frozenset(EXTENSIONS) | {".au"}


def record(fmt: str) -> Format:
    """The record of a format named as ``confirm`` names it; KeyError for any other name."""
    return RECORDS[fmt]


#: bytes read from the head of a file to identify it (an ID3v2 tag in front
#: of the audio is skipped with one extra seek, whatever its size)
HEAD_BYTES = 4096

#: labels of what _identify finds: tagger's formats, and what it recognises and refuses
_NAMES = {**{f.name: f.label for f in RECORDS.values()},
          "adts": "raw AAC (ADTS)", "oggflac": "Ogg FLAC", "ogg-other": "Ogg (not Vorbis or Opus)"}

# MPEG audio header tables: bitrate (kbit/s) by [version is MPEG-1][layer], sample rates
_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def expected_format(path: str | Path) -> str | None:
    """The format a file's extension promises (``None``: not an audio extension)."""
    return EXTENSIONS.get(Path(path).suffix.lower())


def sniff(path: str | Path) -> str | None:
    """The format a file's first bytes show, one of :data:`FORMATS`, or ``None``.

    ``None`` covers empty files, non-audio content and audio tagger cannot tag
    (raw ADTS AAC, Ogg FLAC, ...); :func:`confirm` says which.
    """
    kind = _identify(Path(path))
    return kind if kind in FORMATS else None


def confirm(path: str | Path) -> str:
    """The file's format when its extension and its content agree.

    Raises
    ------
    UnsupportedFormat
        With a one-line reason: unknown extension, empty or unreadable file,
        content that is not audio, or audio of another format than the name says.
    """
    path = Path(path)
    expected = expected_format(path)
    if expected is None:
        raise UnsupportedFormat(f"{path.suffix or 'no extension'} is not a supported audio extension")
    try:
        if path.is_dir():
            raise UnsupportedFormat("a directory, not an audio file")
        size = path.stat().st_size
    except OSError as e:
        raise UnsupportedFormat(f"cannot read the file ({e.strerror or e})") from None
    if size == 0:
        raise UnsupportedFormat("empty file (0 bytes)")
    try:
        found = _identify(path)
    except OSError as e:
        raise UnsupportedFormat(f"cannot read the file ({e.strerror or e})") from None
    if found == expected:
        return found
    what = _NAMES[expected]
    if found is None:
        raise UnsupportedFormat(f"not {what} audio: the content is not a recognised audio format")
    if found == "adts":
        raise UnsupportedFormat("raw AAC (ADTS) stream: it cannot hold tags; remux it to .m4a")
    if found not in FORMATS:
        raise UnsupportedFormat(f"{_NAMES[found]} audio is not supported")
    raise UnsupportedFormat(f"the content is {_NAMES[found]}, not {what} as the name {path.suffix} says")


def _identify(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
        offset = 0
        # An ID3v2 tag may sit in front of MP3, ADTS and (rarely) FLAC audio.
        while head[:3] == b"ID3" and len(head) >= 10:
            offset += id3_size(head)
            f.seek(offset)
            head = f.read(HEAD_BYTES)
    if len(head) < 12:
        return "mp3" if offset and _mpeg_frames(head) else None
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return _ogg_codec(head)
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[0] == 0xFF and (head[1] & 0xF6) == 0xF0:
        return "adts"
    if _mpeg_frames(head):
        return "mp3"
    return None


def id3_size(head: bytes) -> int:
    """Bytes taken by the ID3v2 tag at the start of ``head`` (header, body, footer)."""
    body = 0
    for b in head[6:10]:  # four 7-bit "syncsafe" bytes
        body = (body << 7) | (b & 0x7F)
    footer = 10 if head[5] & 0x10 else 0
    return 10 + body + footer


def _ogg_codec(head: bytes) -> str:
    # The first page holds exactly the codec's identification packet.
    if len(head) < 28:
        return "ogg-other"
    nseg = head[26]
    packet = head[27 + nseg: 27 + nseg + 8]
    if packet[:7] == b"\x01vorbis":
        return "ogg"
    if packet[:8] == b"OpusHead":
        return "opus"
    if packet[:5] == b"\x7fFLAC":
        return "oggflac"
    return "ogg-other"


def _mpeg_frame_length(h: bytes) -> int:
    """Length in bytes of the MPEG audio frame whose 4-byte header is ``h`` (0: not a header)."""
    if len(h) < 4 or h[0] != 0xFF or (h[1] & 0xE0) != 0xE0:
        return 0
    version = (h[1] >> 3) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5, 1: reserved
    layer = 4 - ((h[1] >> 1) & 3)  # 4 means reserved
    bitrate_i, rate_i, pad = h[2] >> 4, (h[2] >> 2) & 3, (h[2] >> 1) & 1
    if version == 1 or layer == 4 or bitrate_i in (0, 15) or rate_i == 3:
        return 0
    mpeg1 = version == 3
    bitrate = _BITRATES[(mpeg1, layer)][bitrate_i] * 1000
    rate = _RATES[version][rate_i]
    if layer == 1:
        return (12 * bitrate // rate + pad) * 4
    if layer == 3 and not mpeg1:
        return 72 * bitrate // rate + pad
    return 144 * bitrate // rate + pad


def _mpeg_frames(head: bytes) -> bool:
    """True when ``head`` starts with two consecutive MPEG audio frames.

    One frame header alone is four bytes that random data matches too
    often; a second one exactly where the first frame ends is convincing.
    A file shorter than two frames passes on a single valid header.
    """
    n = _mpeg_frame_length(head)
    if n == 0:
        return False
    if len(head) < n + 4:
        return True
    nxt = head[n: n + 4]
    return _mpeg_frame_length(nxt) > 0 and (nxt[1] >> 3) & 3 == (head[1] >> 3) & 3


__all__ = ["Format", "RECORDS", "FORMATS", "EXTENSIONS", "READABLE_EXTENSIONS", "record", "expected_format",
           "sniff", "confirm", "id3_size"]
