"""Decoding: only the windows the analysis needs, mono, at the target rate.

libsndfile (through soundfile) reads MP3, FLAC, Ogg Vorbis, Opus, WAV and AIFF
and seeks sample-accurately, so a window costs what it holds. What it cannot
read (M4A/AAC), and Ogg Vorbis (whose seeks libsndfile sometimes misplaces), is
decoded in-process by FFmpeg's libraries through PyAV, which seeks to every
window. The ffmpeg command line is the fallback for both: for
streams libsndfile gives up on (it resyncs past damage) and for files PyAV
cannot finish, so that damaged and truncated files get one error wording.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tagger import features, formats
from tagger.timing import timed
from tagger.errors import UnreadableAudio, UnsupportedFormat
from tagger.options import Hearing

#: windows analysed per track, spread over its whole length (declared by tagger.options.Hearing)
DEFAULT_WINDOWS = Hearing.windows
#: skip this fraction at each end (intros, fade-outs, silence)
EDGE_FRACTION = 0.05
#: RMS below this (about -60 dBFS) counts as silence
SILENCE_RMS = 1e-3


def _decoder(path: Path, fmt: str | None) -> str:
    """The decoder route of the file's format (``tagger.formats.Format.decoder``); a name
    that is no format's goes to libsndfile, with ffmpeg behind it."""
    name = fmt or formats.expected_format(path)
    return formats.RECORDS[name].decoder if name in formats.RECORDS else "soundfile"


@dataclass(frozen=True)
class AudioInfo:
    frames: int
    samplerate: int
    channels: int
    decoder: str  # "soundfile", "av" (PyAV, in-process FFmpeg) or "ffmpeg" (the command line)

    @property
    def duration(self) -> float:
        return self.frames / self.samplerate if self.samplerate else 0.0


@dataclass
class Clip:
    """The audio a model sees: equal-length mono windows at ``sr``."""

    windows: list[np.ndarray]
    sr: int
    info: AudioInfo
    starts: list[float] = field(default_factory=list)

    def one_per_window(self) -> list["Clip"]:
        """A clip of each window alone (for models that answer window by window)."""
        starts = self.starts or [0.0] * len(self.windows)
        return [Clip(windows=[w], sr=self.sr, info=self.info, starts=[s]) for w, s in zip(self.windows, starts)]


def probe(path: str | Path, fmt: str | None = None) -> AudioInfo:
    """Length, rate and channels of an audio file; raises UnreadableAudio."""
    path = Path(path)
    if _decoder(path, fmt) == "av":
        info = _probe_av(path)
        if info is not None:
            return info
    else:
        import soundfile as sf

        try:
            i = sf.info(str(path))
            if i.frames > 0 and i.samplerate > 0:
                return AudioInfo(int(i.frames), int(i.samplerate), int(i.channels), "soundfile")
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
            pass
    return _ffprobe(path)


def _probe_av(path: Path) -> AudioInfo | None:
    """Length, rate and channels through PyAV; None when it cannot tell (ffprobe then decides)."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(str(path)) as c:
            st = c.streams.audio[0]
            sr, ch = int(st.codec_context.sample_rate), int(st.codec_context.channels)
            if st.duration is not None:
                dur = float(st.duration * st.time_base)
            elif c.duration is not None:
                dur = c.duration / 1_000_000  # AV_TIME_BASE
            else:
                return None
    except (av.FFmpegError, IndexError, ValueError, TypeError, OSError):
        return None
    if dur <= 0 or sr <= 0 or ch <= 0:
        return None
    return AudioInfo(int(dur * sr), sr, ch, "av")


def _ffprobe(path: Path) -> AudioInfo:
    if shutil.which("ffprobe") is None:
        raise UnsupportedFormat(f"cannot decode {path.suffix or 'this file'}: ffmpeg is not installed")
    cmd = ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
           "stream=sample_rate,channels,duration:format=duration", "-of", "json", str(path)]
    try:
        out = subprocess.run(cmd, capture_output=True, check=False, timeout=60)
    except subprocess.TimeoutExpired:
        raise UnreadableAudio("ffprobe timed out reading the file") from None
    try:
        doc = json.loads(out.stdout or b"{}")
        stream = doc["streams"][0]
        sr = int(stream["sample_rate"])
        ch = int(stream["channels"])
        dur = float(stream.get("duration") or doc["format"]["duration"])
    except (KeyError, IndexError, ValueError, TypeError):
        detail = (out.stderr.decode("utf-8", "replace").strip().splitlines() or ["no audio stream"])[-1]
        raise UnreadableAudio(f"not a readable audio file ({detail})") from None
    if dur <= 0 or sr <= 0:
        raise UnreadableAudio("the file holds no audio")
    return AudioInfo(int(dur * sr), sr, ch, "ffmpeg")


def window_starts(duration: float, window_s: float, n: int = DEFAULT_WINDOWS) -> list[float]:
    """Start times (s) of up to ``n`` windows spread evenly over the track.

    The first and last ``EDGE_FRACTION`` of a long track are skipped; a track
    too short for ``n`` windows gets as many back-to-back windows as fit.
    """
    if duration < window_s:
        return []
    fit = int(duration // window_s)
    if fit <= n:
        return [i * window_s for i in range(fit)]
    lo = duration * EDGE_FRACTION
    hi = duration * (1 - EDGE_FRACTION) - window_s
    if hi - lo < (n - 1) * window_s:  # not enough room once the edges are cut
        lo, hi = 0.0, duration - window_s
    return [float(x) for x in np.linspace(lo, hi, n)]


def load_clip(
    path: str | Path,
    fmt: str | None = None,
    sr: int = features.SR,
    window: int = features.PATCH_SAMPLES,
    n_windows: int = DEFAULT_WINDOWS,
) -> Clip:
    """Decode ``n_windows`` windows of ``window`` samples (at ``sr``) spread over the file.

    Raises UnreadableAudio for files that decode to nothing usable: too short
    for one window, silent, or corrupt.
    """
    info, starts = plan(path, fmt, sr, window, n_windows)
    clip = read_windows(path, info, starts, sr, window)
    if is_silent(clip.windows):
        raise UnreadableAudio("the audio is silent")
    return clip


@timed("decode")
def plan(
    path: str | Path,
    fmt: str | None = None,
    sr: int = features.SR,
    window: int = features.PATCH_SAMPLES,
    n_windows: int = DEFAULT_WINDOWS,
) -> tuple[AudioInfo, list[float]]:
    """Probe a file and place its windows: ``(info, start times in s)``; raises UnreadableAudio."""
    info = probe(path, fmt)
    window_s = window / sr
    starts = window_starts(info.duration, window_s, n_windows)
    if not starts:
        raise UnreadableAudio(
            f"audio too short to analyse ({info.duration:.1f} s; at least {window_s:.1f} s needed)"
        )
    return info, starts


def is_silent(windows: list[np.ndarray]) -> bool:
    return all(float(np.sqrt(np.mean(w.astype(np.float64) ** 2))) < SILENCE_RMS for w in windows)


def read_windows(
    path: str | Path,
    info: AudioInfo,
    starts: list[float],
    sr: int = features.SR,
    window: int = features.PATCH_SAMPLES,
) -> Clip:
    """Decode the windows starting at ``starts`` (from ``plan``); no silence check."""
    with Reader(path, info, sr, window) as reader:
        return reader.read(starts)


class Reader:
    """Windows of one file, read in as many calls as needed through one open decoder.

    Progressive hearing reads a track in stages; each stage through a new
    decoder would redo work: libsndfile seeks in an MP3 by scanning its frames
    from the start (15 ms to reach the end of a 7 MB file), and keeps that
    index only while the file is open. A decoder that fails falls back to the
    ffmpeg command line, for that call and every later one.
    """

    def __init__(self, path: str | Path, info: AudioInfo, sr: int = features.SR,
                 window: int = features.PATCH_SAMPLES):
        self.path, self.info, self.sr, self.window = Path(path), info, sr, window
        self._handle = None  # the open sf.SoundFile or PyAV container
        self._cli = info.decoder not in ("soundfile", "av")

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    @timed("decode")
    def read(self, starts: list[float]) -> Clip:
        """The windows starting at ``starts``; raises UnreadableAudio when none can be decoded."""
        if self._cli:
            windows = _read_ffmpeg(self.path, self.info, starts, self.window, self.sr)
        else:
            try:
                windows = self._read_open(starts)
            except UnreadableAudio as exc:
                # libsndfile gives up on damaged streams that ffmpeg decodes past (it resyncs);
                # a stream PyAV could not finish (damaged, truncated): the command line says how
                self.close()
                self._cli = True
                if shutil.which("ffmpeg") is None:
                    raise
                try:
                    windows = _read_ffmpeg(self.path, self.info, starts, self.window, self.sr)
                except UnreadableAudio as second:
                    if self.info.decoder == "av":
                        raise
                    # "truncated" says more than libsndfile's lost sync; otherwise keep the first reason
                    raise (second if second.message.startswith("truncated") else exc) from None
        return Clip(windows=windows, sr=self.sr, info=self.info, starts=list(starts[: len(windows)]))

    def _read_open(self, starts: list[float]) -> list[np.ndarray]:
        if self.info.decoder == "soundfile":
            import soundfile as sf

            try:
                if self._handle is None:
                    self._handle = sf.SoundFile(str(self.path))
                return _read_soundfile(self._handle, self.info, starts, self.window, self.sr)
            except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
                detail = " ".join(str(exc).replace("Error :", "").split()).rstrip(".")
                raise UnreadableAudio(f"corrupt audio: the decoder failed ({detail})") from None
        import av

        try:
            if self._handle is None:
                self._handle = av.open(str(self.path))
            return _read_av(self._handle, starts, self.window, self.sr)
        except av.FFmpegError as exc:
            raise UnreadableAudio(f"decoding failed ({exc})") from None


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    if len(y) >= n:
        return np.ascontiguousarray(y[:n], dtype=np.float32)
    return np.pad(y, (0, n - len(y))).astype(np.float32)


def _to_mono(x: np.ndarray) -> np.ndarray:
    # a matrix product is 40x faster than np.mean(axis=1) on interleaved frames
    if x.shape[1] == 1:
        return x[:, 0]
    return x @ np.full(x.shape[1], 1.0 / x.shape[1], dtype=np.float32)


def _read_soundfile(f, info: AudioInfo, starts: list[float], window: int, sr: int) -> list[np.ndarray]:
    """Every window from the open ``soundfile.SoundFile`` ``f``; libsndfile's errors propagate."""
    need = int(np.ceil(window * info.samplerate / sr))
    out = []
    ends_at = None
    for start in starts:
        offset = int(round(start * info.samplerate))
        f.seek(min(offset, max(info.frames - 1, 0)))
        x = f.read(need, dtype="float32", always_2d=True)
        if len(x) < need:
            # the file holds less audio than its header declares: truncated
            ends_at = (offset + len(x)) / info.samplerate
            break
        out.append(_fit(features.resample(_to_mono(x), info.samplerate, sr), window))
    if not out:
        if ends_at is not None:
            raise UnreadableAudio(
                f"truncated or corrupt: the audio stops at {ends_at:.1f} s of {info.duration:.1f} s declared")
        raise UnreadableAudio("decoding produced no audio")
    return out


def _read_av(c, starts: list[float], window: int, sr: int) -> list[np.ndarray]:
    """Every window from the open PyAV container ``c``: seek a little before it, decode, cut at its
    first sample.

    Times count from the stream's first sample (its ``start_time``), as the
    ffmpeg command line's ``-ss`` and libsndfile's frame offsets do. Raises
    UnreadableAudio when a window cannot be decoded in full; PyAV's errors propagate.
    """
    st = c.streams.audio[0]
    native = int(st.codec_context.sample_rate)
    need = int(np.ceil(window * native / sr))
    tb = st.time_base
    base = st.start_time or 0
    out = []
    for start in starts:
        # decoders need a little audio before the window to settle (AAC overlaps frames)
        c.seek(base + int(max(0.0, start - SEEK_PREROLL_S) / tb), stream=st, backward=True)
        x = _decode_from(c, st, native, base, start, need)
        out.append(_fit(features.resample(_to_mono(x), native, sr), window))
    return out


#: seconds decoded before a window after a seek, then dropped
SEEK_PREROLL_S = 0.5


def _decode_from(c, st, native: int, base: int, start: float, need: int) -> np.ndarray:
    """``need`` frames ``(need, channels)`` float32 from ``start`` seconds, decoding from the current position."""
    chunks, first, got = [], None, 0
    target = int(round(start * native))
    for frame in c.decode(st):
        if frame.pts is None:
            raise UnreadableAudio("decoding failed (a frame without a timestamp)")
        a = frame.to_ndarray()
        a = a.T if frame.format.is_planar else a.reshape(-1, len(frame.layout.channels))
        if first is None:
            first = int(round(float((frame.pts - base) * st.time_base) * native))
            if first > target:
                raise UnreadableAudio("decoding failed (seek went past the window)")
        chunks.append(a)
        got += len(a)
        if first + got >= target + need:
            break
    if first is None or first + got < target + need:
        raise UnreadableAudio("truncated or corrupt: a window could not be decoded in full")
    x = np.concatenate(chunks)[target - first : target - first + need]
    return np.ascontiguousarray(x, dtype=np.float32)


def _read_ffmpeg(path: Path, info: AudioInfo, starts: list[float], window: int, sr: int) -> list[np.ndarray]:
    if shutil.which("ffmpeg") is None:
        raise UnsupportedFormat(f"cannot decode {path.suffix}: ffmpeg is not installed")
    # one process, one input per window, each seeked and cut to exactly `window` samples
    cmd = ["ffmpeg", "-nostdin", "-v", "error"]
    graph = []
    window_s = window / sr
    for i, start in enumerate(starts):
        cmd += ["-ss", f"{start:.6f}", "-t", f"{window_s + 0.1:.6f}", "-i", str(path)]
        graph.append(
            f"[{i}:a:0]aresample={sr},aformat=sample_fmts=flt,atrim=end_sample={window}[a{i}]"
        )
    joined = "".join(f"[a{i}]" for i in range(len(starts)))
    graph.append(f"{joined}concat=n={len(starts)}:v=0:a=1[out]")
    cmd += ["-filter_complex", ";".join(graph), "-map", "[out]", "-f", "f32le", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False, timeout=300)
    except subprocess.TimeoutExpired:
        raise UnreadableAudio("ffmpeg timed out decoding the file") from None
    if proc.returncode != 0:
        detail = (proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["unknown error"])[-1]
        raise UnreadableAudio(f"decoding failed ({detail})")
    x = np.frombuffer(proc.stdout, dtype=np.float32)
    ch = max(info.channels, 1)
    x = x[: len(x) - len(x) % ch].reshape(-1, ch)
    mono = _to_mono(x)
    # a window cut short means the stream ended early (truncated) or lost samples (damage);
    # windows come in time order, so the complete ones are the leading ones
    complete = len(mono) // window
    if complete == 0:
        raise UnreadableAudio(
            f"truncated or corrupt: {len(mono) / sr:.1f} s of audio decoded, {info.duration:.1f} s declared")
    return [np.ascontiguousarray(mono[i * window : (i + 1) * window]) for i in range(complete)]
