"""Augmentation of log-mel patches, done on the cached spectrogram (not on audio).

- time shift: a random 128-frame crop of the whole track's log-mel. Frames are
  not centred, so this is exactly the patch of a window starting at that frame.
- pitch shift: the patch moved up or down by a few mel bands, edges repeated.
  Mel bands are roughly log-spaced above ~1 kHz, so this approximates a pitch
  shift there; it is not a resynthesised pitch shift.
- Gaussian noise: white noise added in the mel power domain at a random SNR
  (the expected power of the noise per band, no per-bin randomness).
"""
from __future__ import annotations

import numpy as np

from tagger import features


def random_crop(logmel: np.ndarray, rng: np.random.Generator, frames: int = features.PATCH_FRAMES) -> np.ndarray:
    """A random ``(n_mels, frames)`` crop of ``(n_mels, n_frames)``."""
    start = int(rng.integers(0, logmel.shape[1] - frames + 1))
    return logmel[:, start : start + frames]


def mel_shift(patch: np.ndarray, bins: int) -> np.ndarray:
    """Shift ``(n_mels, t)`` by ``bins`` mel bands (positive = up), repeating the edge band."""
    if bins == 0:
        return patch
    out = np.roll(patch, bins, axis=0)
    if bins > 0:
        out[:bins] = patch[:1]
    else:
        out[bins:] = patch[-1:]
    return out


def add_noise(patch: np.ndarray, snr_db: float) -> np.ndarray:
    """Add white noise ``snr_db`` below the patch's mean mel power; input/output in dB."""
    power = 10.0 ** (patch / 10.0)
    noise = power.mean() / (10.0 ** (snr_db / 10.0))
    return (10.0 * np.log10(power + noise)).astype(np.float32)


def augment(
    logmel: np.ndarray,
    rng: np.random.Generator,
    max_shift_bins: int = 2,
    p_pitch: float = 0.5,
    p_noise: float = 0.5,
    snr_range: tuple[float, float] = (10.0, 30.0),
) -> np.ndarray:
    """One augmented training patch ``(n_mels, 128)`` from a track's whole log-mel."""
    patch = random_crop(logmel, rng).copy()
    if rng.random() < p_pitch:
        patch = mel_shift(patch, int(rng.integers(-max_shift_bins, max_shift_bins + 1)))
    if rng.random() < p_noise:
        patch = add_noise(patch, float(rng.uniform(*snr_range)))
    return patch
