"""Per-track feature cache: decode once, train many times.

For each track the cache holds three ``.npy`` arrays under
``<cache_dir>/<key[:2]>/<key>/``:

- ``logmel.npy``  ``(128, n_frames)`` float32, the whole track's log-mel (for
  random 128-frame crops: time-shift augmentation that is exact, because frames
  are not centred)
- ``patches.npy`` ``(n_windows, 128, 128)`` float32, ``features.mel_patches`` of
  each ``features.split_windows`` window of the track
- ``stats.npy``   ``(114,)`` float32, ``features.mfcc_stats`` of the windows
  inference would decode (``audio.window_starts``), so the ML models train on
  the statistic they are later fed

The key hashes the resolved path, size, mtime and both feature versions, so an
edited file or a new feature version is recomputed, never served stale.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagger import audio, features
from tagger.errors import TaggerError

CACHE_VERSION = 1
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "cache" / "features"


@dataclass
class TrackFeatures:
    logmel: np.ndarray
    patches: np.ndarray
    stats: np.ndarray


def cache_key(path: str | Path) -> str:
    p = Path(path).resolve()
    st = p.stat()
    ident = json.dumps(
        [str(p), st.st_size, st.st_mtime_ns, features.LOGMEL_PARAMS["version"],
         features.MFCC_STATS_PARAMS["version"], CACHE_VERSION]
    )
    return hashlib.sha1(ident.encode()).hexdigest()


def decode_track(path: str | Path, sr: int = features.SR) -> np.ndarray:
    """The whole track, mono float32 at ``sr``, through ``tagger.audio``'s decoders."""
    info = audio.probe(path)
    n = int(info.frames * sr / info.samplerate)
    clip = audio.load_clip(path, sr=sr, window=n, n_windows=1)
    return clip.windows[0]


def compute(y: np.ndarray, sr: int = features.SR) -> TrackFeatures:
    """Features of one decoded track (see the module docstring for shapes)."""
    windows = features.split_windows(y)
    if not windows:
        raise ValueError("track shorter than one patch")
    patches = np.stack([features.mel_patches(w, sr)[0] for w in windows])
    window_s = features.PATCH_SAMPLES / sr
    starts = audio.window_starts(len(y) / sr, window_s, audio.DEFAULT_WINDOWS)
    picked = [y[int(round(s * sr)): int(round(s * sr)) + features.PATCH_SAMPLES] for s in starts]
    stats = features.mfcc_stats([w for w in picked if len(w) == features.PATCH_SAMPLES] or windows, sr)
    return TrackFeatures(features.log_mel(y, sr), patches, stats)


def get(path: str | Path, cache_dir: str | Path = DEFAULT_DIR) -> TrackFeatures:
    """Cached features of one file; decodes and stores them on a miss.

    Raises ``TaggerError`` (unreadable audio) or ``ValueError`` (too short).
    """
    key = cache_key(path)
    d = Path(cache_dir) / key[:2] / key
    names = ("logmel", "patches", "stats")
    if all((d / f"{n}.npy").is_file() for n in names):
        return TrackFeatures(*(np.load(d / f"{n}.npy") for n in names))
    tf = compute(decode_track(path))
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        tmp = d / f"{n}.tmp.npy"
        np.save(tmp, getattr(tf, n))
        tmp.replace(d / f"{n}.npy")  # atomic: a killed run never leaves half a file
    return tf


def get_many(items, cache_dir: str | Path = DEFAULT_DIR, log=print) -> tuple[list, dict[str, TrackFeatures], dict[str, str]]:
    """Features for every item; returns (items kept, {track_id: features}, {track_id: error})."""
    kept, feats, errors = [], {}, {}
    for i, it in enumerate(items):
        try:
            feats[it.track_id] = get(it.path, cache_dir)
            kept.append(it)
        except (TaggerError, ValueError, OSError) as exc:
            errors[it.track_id] = str(exc)
        if log and (i + 1) % 50 == 0:
            log(f"features: {i + 1}/{len(items)}")
    return kept, feats, errors
