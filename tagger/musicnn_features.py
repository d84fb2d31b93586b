"""The input of the musicnn models: compressed mel spectrograms at 16 kHz.

Pure functions over numpy arrays, to be merged into ``tagger.features`` (the
one features module). They reproduce what the musicnn models were trained on
(Pons & Serra, ``musicnn`` 0.1.0, ``extractor.batch_data`` and the models'
``config.json``): audio at 16 kHz, power STFT with a 512-point periodic Hann
window and hop 256, a 96-band Slaney mel filterbank with Slaney (area)
normalisation, the mel power rounded to float16, then ``log10(1 + 10000 * mel)``
("logC" in the config). Spectrogram rows are time frames, columns mel bands,
the layout the network expects.

One deliberate difference from the original extractor: frames are not centred
(``center=False``), as everywhere in ``tagger``, so a patch depends on its own
samples only. A non-centred frame ``j`` is the original's centred frame
``j + 1`` of the same audio, so interior patches are identical; only the first
half-frame at a file's very start differs (the original pads it).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from tagger.features import power_spectrogram

SR = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
#: frames in one model input patch: 3 s, as the models were trained
PATCH_FRAMES = 187
#: samples that make exactly one patch: 512 + 186 * 256 = 48128 (3.008 s)
PATCH_SAMPLES = N_FFT + (PATCH_FRAMES - 1) * HOP
#: the "logC" compression: log10(1 + C * mel power)
LOG_C = 10000.0

#: feature parameters, as written into the musicnn model cards
MUSICNN_PARAMS = {
    "name": "musicnn_logc_mel",
    "sr": SR,
    "n_fft": N_FFT,
    "hop_length": HOP,
    "n_mels": N_MELS,
    "patch_frames": PATCH_FRAMES,
    "patch_samples": PATCH_SAMPLES,
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


@lru_cache(maxsize=4)
def mel_filterbank(sr: int = SR, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-scale, Slaney-normalised mel filterbank, shape ``(n_mels, 1 + n_fft // 2)``.

    The same filters as librosa's default (``htk=False, norm="slaney"``), which
    the musicnn training pipeline used.
    """
    import librosa  # deferred: importing librosa costs seconds

    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels).astype(np.float32)


def logc_mel(
    y: np.ndarray,
    sr: int = SR,
    n_fft: int = N_FFT,
    hop_length: int = HOP,
    n_mels: int = N_MELS,
    log_c: float = LOG_C,
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


def fit_patch_samples(y: np.ndarray, n: int = PATCH_SAMPLES) -> np.ndarray:
    """Make ``y`` at least ``n`` samples long by repeating it ("repeat-pad", as in training).

    Longer audio is returned unchanged. Shape ``(max(len(y), n),)``.
    """
    y = np.asarray(y, dtype=np.float32)
    if len(y) >= n:
        return y
    if len(y) == 0:
        return np.zeros(n, dtype=np.float32)
    return np.tile(y, int(np.ceil(n / len(y))))[:n]


def musicnn_patches(spec: np.ndarray, patch_frames: int = PATCH_FRAMES) -> np.ndarray:
    """Cut a ``(n_frames, n_mels)`` spectrogram into non-overlapping patches.

    Returns float32 ``(n_patches, patch_frames, n_mels)``; a trailing remainder
    shorter than a patch is dropped.
    """
    n = spec.shape[0] // patch_frames
    return np.ascontiguousarray(
        spec[: n * patch_frames].reshape(n, patch_frames, spec.shape[1]), dtype=np.float32
    )


def window_patches(y: np.ndarray, sr: int) -> np.ndarray:
    """One analysis window at any rate → its musicnn patches ``(n, 187, 96)``, ``n ≥ 1``.

    The window is resampled to 16 kHz; one shorter than a patch (3.008 s) is
    repeat-padded to one patch.
    """
    from tagger.features import resample

    y16 = fit_patch_samples(resample(y, sr, SR))
    return musicnn_patches(logc_mel(y16))
