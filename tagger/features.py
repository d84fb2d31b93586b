"""Audio features as pure functions over numpy arrays.

One implementation, shared by training and inference, so a model sees in
production exactly the features it was trained on. Every function takes its
parameters explicitly; the defaults below are the ones the shipped models use
and are recorded in each model card under ``features``.

Conventions: audio ``y`` is mono float32 in [-1, 1], shape ``(n_samples,)``.
Spectrogram frames are *not* centred (``center=False``), so a patch depends on
its own samples only: a 128-frame patch cut from a whole clip equals the patch
computed from just that window of audio, which is what inference decodes.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from tagger.timing import timed

SR = 22050
N_FFT = 2048
HOP = 512
N_MELS = 128
PATCH_FRAMES = 128
N_MFCC = 20
AMIN = 1e-10

#: samples of audio that make exactly one patch: 2048 + 127 * 512 = 67072 (3.04 s)
PATCH_SAMPLES = N_FFT + (PATCH_FRAMES - 1) * HOP

#: feature parameters, as written into model cards
LOGMEL_PARAMS = {
    "name": "logmel",
    "sr": SR,
    "n_fft": N_FFT,
    "hop_length": HOP,
    "n_mels": N_MELS,
    "patch_frames": PATCH_FRAMES,
    "center": False,
    "window": "hann",
    "mel": "slaney",
    "db": "10*log10(max(power, 1e-10))",
    "version": 1,
}
MFCC_STATS_PARAMS = {
    "name": "mfcc_stats",
    "sr": SR,
    "n_fft": N_FFT,
    "hop_length": HOP,
    "n_mels": N_MELS,
    "n_mfcc": N_MFCC,
    "stats": ["mean", "std"],
    "frame_features": "mfcc20, delta20, centroid, bandwidth, rolloff85, zcr, rms, chroma12",
    "version": 1,
}


@lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
    # periodic Hann, as librosa's get_window('hann', fftbins=True)
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (Auditory Toolbox): linear to 1 kHz (200/3 Hz a mel), logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log = f >= 1000.0
    return np.where(log, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


@lru_cache(maxsize=8)
def mel_filterbank(sr: int = SR, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-normalised mel filterbank from 0 Hz to Nyquist, shape ``(n_mels, 1 + n_fft // 2)``:
    triangles between consecutive points equally spaced in mels, each scaled to unit area.

    The same filters as librosa's ``filters.mel`` defaults (tests compare them), computed here so
    that a worker's features need no librosa, whose import (SciPy's signal module, numba) costs
    more than a second of start-up.
    """
    fft_hz = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2.0), n_mels + 2))
    width = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / width[:-1, None]
    falling = ramps[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def frames(y: np.ndarray, n_fft: int = N_FFT, hop_length: int = HOP) -> np.ndarray:
    """View ``y`` as overlapping frames, shape ``(n_frames, n_fft)`` (no copy, no centring)."""
    y = np.ascontiguousarray(y, dtype=np.float32)
    if len(y) < n_fft:
        return np.empty((0, n_fft), dtype=np.float32)
    return np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop_length]


def power_spectrogram(y: np.ndarray, n_fft: int = N_FFT, hop_length: int = HOP) -> np.ndarray:
    """|STFT|² with a periodic Hann window, shape ``(1 + n_fft // 2, n_frames)``, float32."""
    f = frames(y, n_fft, hop_length) * _hann(n_fft)
    spec = np.fft.rfft(f, axis=1)
    return (spec.real**2 + spec.imag**2).astype(np.float32).T


def log_mel(
    y: np.ndarray,
    sr: int = SR,
    n_fft: int = N_FFT,
    hop_length: int = HOP,
    n_mels: int = N_MELS,
) -> np.ndarray:
    """Log-power mel spectrogram in dB (absolute reference 1.0, floor -100 dB).

    Returns float32 of shape ``(n_mels, n_frames)`` with
    ``n_frames = 1 + (len(y) - n_fft) // hop_length`` (0 when ``y`` is shorter than ``n_fft``).
    """
    power = power_spectrogram(y, n_fft, hop_length)
    mel = mel_filterbank(sr, n_fft, n_mels) @ power
    return 10.0 * np.log10(np.maximum(mel, AMIN))


def patches(logmel: np.ndarray, patch_frames: int = PATCH_FRAMES) -> np.ndarray:
    """Cut a log-mel spectrogram into non-overlapping patches.

    Returns float32 ``(n_patches, n_mels, patch_frames)``; a trailing remainder
    shorter than a patch is dropped.
    """
    n = logmel.shape[1] // patch_frames
    cut = logmel[:, : n * patch_frames]
    return np.ascontiguousarray(
        cut.reshape(logmel.shape[0], n, patch_frames).transpose(1, 0, 2), dtype=np.float32
    )


@timed("features")
def mel_patches(y: np.ndarray, sr: int = SR) -> np.ndarray:
    """Audio → ``(n_patches, 128, 128)`` log-mel patches, the deep models' input."""
    return patches(log_mel(y, sr))


def split_windows(y: np.ndarray, window: int = PATCH_SAMPLES) -> list[np.ndarray]:
    """Split a clip into consecutive non-overlapping windows of ``window`` samples."""
    return [y[i : i + window] for i in range(0, len(y) - window + 1, window)]


def _frame_features(y: np.ndarray, sr: int, n_fft: int, hop_length: int) -> np.ndarray:
    """Per-frame descriptors, shape ``(57, n_frames)``; see ``MFCC_STATS_PARAMS``."""
    import librosa

    power = power_spectrogram(y, n_fft, hop_length)
    mel_db = 10.0 * np.log10(np.maximum(mel_filterbank(sr, n_fft, N_MELS) @ power, AMIN))
    mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=N_MFCC)
    width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2))
    delta = librosa.feature.delta(mfcc, width=max(width, 3)) if mfcc.shape[1] >= 3 else np.zeros_like(mfcc)
    mag = np.sqrt(power)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr).astype(np.float32)
    total = np.maximum(mag.sum(axis=0), AMIN)
    centroid = (freqs[:, None] * mag).sum(axis=0) / total
    bandwidth = np.sqrt(((freqs[:, None] - centroid[None, :]) ** 2 * mag).sum(axis=0) / total)
    cum = np.cumsum(mag, axis=0)
    rolloff = freqs[np.argmax(cum >= 0.85 * cum[-1:, :], axis=0)]
    fr = frames(y, n_fft, hop_length)
    zcr = (np.abs(np.diff(np.signbit(fr), axis=1)).sum(axis=1) / n_fft).astype(np.float32)
    rms = np.sqrt(np.mean(fr.astype(np.float32) ** 2, axis=1))
    # tuning=0.0 skips librosa's tuning estimation (numba; crashes on some CPUs)
    chroma = librosa.feature.chroma_stft(S=power, sr=sr, n_fft=n_fft, tuning=0.0)
    return np.vstack(
        [mfcc, delta, centroid / 1000.0, bandwidth / 1000.0, rolloff / 1000.0, zcr, rms, chroma]
    ).astype(np.float32)


@timed("features")
def mfcc_stats(
    windows: list[np.ndarray], sr: int = SR, n_fft: int = N_FFT, hop_length: int = HOP
) -> np.ndarray:
    """MFCC-statistics vector for the classic ML models, shape ``(114,)``.

    Frame descriptors of every window are pooled, then summarised by their mean
    and standard deviation (57 + 57 values). Pass the windows inference decodes,
    or a whole clip as one window.
    """
    per_window = [_frame_features(w, sr, n_fft, hop_length) for w in windows if len(w) >= n_fft]
    if not per_window:
        raise ValueError("no window is long enough for one frame")
    f = np.hstack(per_window)
    return np.concatenate([f.mean(axis=1), f.std(axis=1)]).astype(np.float32)


def resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """High-quality resampling (soxr); returns float32."""
    if sr_in == sr_out:
        return np.asarray(y, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(y, dtype=np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)


# ---------------------------------------------------------------- musicnn's input
# What the pretrained musicnn models (Pons & Serra, musicnn 0.1.0) were trained
# on: 16 kHz audio, power STFT with a 512-point periodic Hann window and hop
# 256, a 96-band Slaney mel filterbank, the mel power rounded to float16, then
# log10(1 + 10000 * mel) ("logC"). Rows are time frames, columns mel bands.
# As everywhere here, frames are not centred: a non-centred frame j is the
# original extractor's centred frame j + 1, so only the first half-frame of a
# file differs from the original.

MUSICNN_SR = 16000
MUSICNN_N_FFT = 512
MUSICNN_HOP = 256
MUSICNN_N_MELS = 96
#: frames in one model input patch: 3 s, as the models were trained
MUSICNN_PATCH_FRAMES = 187
#: samples that make exactly one patch: 512 + 186 * 256 = 48128 (3.008 s)
MUSICNN_PATCH_SAMPLES = MUSICNN_N_FFT + (MUSICNN_PATCH_FRAMES - 1) * MUSICNN_HOP
#: the "logC" compression: log10(1 + C * mel power)
MUSICNN_LOG_C = 10000.0

#: feature parameters, as written into the musicnn model cards
MUSICNN_PARAMS = {
    "name": "musicnn_logc_mel",
    "sr": MUSICNN_SR,
    "n_fft": MUSICNN_N_FFT,
    "hop_length": MUSICNN_HOP,
    "n_mels": MUSICNN_N_MELS,
    "patch_frames": MUSICNN_PATCH_FRAMES,
    "patch_samples": MUSICNN_PATCH_SAMPLES,
    "center": False,
    "window": "hann",
    "mel": "slaney",
    "mel_norm": "slaney",
    "float16_power": True,
    "log": "log10(1 + 10000 * float16(mel_power))",
    "layout": "(frames, mel bands)",
    "pad_short": "repeat",
    "version": 1,
}


def logc_mel(
    y: np.ndarray,
    sr: int = MUSICNN_SR,
    n_fft: int = MUSICNN_N_FFT,
    hop_length: int = MUSICNN_HOP,
    n_mels: int = MUSICNN_N_MELS,
    log_c: float = MUSICNN_LOG_C,
    float16_power: bool = True,
) -> np.ndarray:
    """Audio → musicnn spectrogram.

    Parameters
    ----------
    y : mono float32 audio at ``sr``, shape ``(n_samples,)``.
    float16_power : round the mel power to float16 before the log, as the
        original pipeline stored it (values above the float16 range are clipped
        to its maximum instead of becoming ``inf``).

    Returns
    -------
    float32 array of shape ``(n_frames, n_mels)`` with
    ``n_frames = 1 + (len(y) - n_fft) // hop_length`` (0 rows if ``y`` is shorter than ``n_fft``).
    """
    mel = mel_filterbank(sr, n_fft, n_mels) @ power_spectrogram(y, n_fft, hop_length)
    if float16_power:
        mel = np.minimum(mel, np.finfo(np.float16).max).astype(np.float16).astype(np.float32)
    return np.log10(1.0 + log_c * mel).T.astype(np.float32)


def fit_patch_samples(y: np.ndarray, n: int = MUSICNN_PATCH_SAMPLES) -> np.ndarray:
    """Make ``y`` at least ``n`` samples long by repeating it ("repeat-pad", as in training).

    Longer audio is returned unchanged. Shape ``(max(len(y), n),)``.
    """
    y = np.asarray(y, dtype=np.float32)
    if len(y) >= n:
        return y
    if len(y) == 0:
        return np.zeros(n, dtype=np.float32)
    return np.tile(y, int(np.ceil(n / len(y))))[:n]


def musicnn_patches(spec: np.ndarray, patch_frames: int = MUSICNN_PATCH_FRAMES) -> np.ndarray:
    """Cut a ``(n_frames, n_mels)`` spectrogram into non-overlapping patches.

    Returns float32 ``(n_patches, patch_frames, n_mels)``; a trailing remainder
    shorter than a patch is dropped.
    """
    n = spec.shape[0] // patch_frames
    return np.ascontiguousarray(
        spec[: n * patch_frames].reshape(n, patch_frames, spec.shape[1]), dtype=np.float32
    )


@timed("features")
def musicnn_window_patches(y: np.ndarray, sr: int) -> np.ndarray:
    """One analysis window at any rate → its musicnn patches ``(n, 187, 96)``, ``n ≥ 1``.

    The window is resampled to 16 kHz; one shorter than a patch (3.008 s) is
    repeat-padded to one patch.
    """
    y16 = fit_patch_samples(resample(y, sr, MUSICNN_SR))
    return musicnn_patches(logc_mel(y16))


#: every feature computation tagger can do, by the name model cards give it (``card.features``)
PARAMS = {p["name"]: p for p in (LOGMEL_PARAMS, MFCC_STATS_PARAMS, MUSICNN_PARAMS)}


def mismatch(card_features: dict, name: str) -> list[str]:
    """How a card's ``features`` differ from what tagger computes as ``name`` (empty: they agree).

    Compared as JSON: a card read from disk holds lists where the parameters hold tuples.
    """
    import json

    ours = json.loads(json.dumps(PARAMS[name]))
    theirs = dict(card_features or {})
    return [f"{k}: trained with {theirs.get(k, '(none)')!r}, computed here as {ours.get(k, '(none)')!r}"
            for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)]


def musicnn_window_rows(windows: list[np.ndarray], sr: int, rows) -> np.ndarray | None:
    """``rows(patches)`` of every window's musicnn patches in one call, averaged per window (a
    window longer than a patch has several): ``(len(windows), k)``; None where ``rows`` gives None."""
    per = [musicnn_window_patches(w, sr) for w in windows]
    out = rows(np.concatenate(per))
    if out is None:
        return None
    bounds = np.cumsum([0] + [len(p) for p in per])
    return np.stack([out[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])
