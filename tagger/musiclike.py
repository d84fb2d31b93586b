"""Whether a track sounds like music at all: a cheap check of the windows a model heard.

A genre model is sure of itself on signals that are not music (a sine sweep is "jazz", white
noise "electronic"), and a wrong genre written into a file is worse than none. Test signals
give themselves away by two things no recording of music does for seconds on end:

- **steadiness**: the spectrum, in octave bands, does not change from one 93 ms moment to
  the next, nor from one window of the track to another. A steady tone, a hum, a chord of
  steady tones (a dial tone), a square or sawtooth wave, and white, pink or brown noise keep
  each band's energy within about half a dB; music moves by 1.7 dB and more (notes start and
  stop, the mix changes). The strongest peak of the mean spectrum over its neighbouring bins
  then says whether the steady sound is a tone (its partials stand out) or noise (nothing does).
- **purity**: nearly all of a 23 ms frame's energy lies in a handful of FFT bins. One or two
  pure tones at a time (a sine sweep, stepped tones, DTMF-like pairs) leave well under 0.1 %
  outside them on the typical frame; a voice or an instrument, with its harmonics, reverb and
  the rest of the mix, leaves 3 % and more.
- **pitch**: in music some moments hold a partial that stands well out of its neighbouring
  bins (a note, a voice, a bass line). Clicks and ticks have none anywhere: the most
  prominent loud bin of the 93 ms frames, over the median of the bins around it, stays under
  8 dB on nine frames in ten (clicks: 4.1 at most), where music reaches 12.9 dB and more.

The spectrum is tilted up 6 dB an octave first (the signal's first difference): brown noise
comes out white, and a few bass bins, whose power swings at random in noise, no longer hold
most of the energy.

Pure numpy, a few milliseconds for three 3 s windows. ``bench/bench_musiclike.py`` measures
it on GTZAN, real game soundtracks and synthetic signals; README (Models) gives the figures
the thresholds below were chosen from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

#: the long frames of steadiness and peak (samples; windows come at 16-22 kHz) and the frames per moment
FRAME, HOP = 2048, 1024
MOMENT_FRAMES = 2
#: octave bands of the long frames' bins, the lowest merged up to 16 bins (170 Hz at 22 kHz): fewer
#: bins would swing at random in noise as much as music's bands move
BAND_EDGES = (1, 16, 32, 64, 128, 256, 512, FRAME // 2 + 1)
#: the short frames of purity, and how many of a frame's strongest bins count as its tones
SHORT_FRAME, SHORT_HOP = 512, 256
TONE_BINS = 8
#: bands, bins and frames this far below the strongest are left out (dB)
FLOOR_DB = 30.0
#: the bins on each side of a bin that make its neighbourhood (peak, pitch)
PEAK_SPAN = 8
#: the loudest bins of a long frame whose height over their neighbourhood counts (pitch)
PITCH_BINS = 16

#: below this steadiness (dB) the sound is steady. Measured (bench/bench_musiclike.py): music 1.71
#: at the least (218 GTZAN clips, 230 Debian game tracks), steady tones 0.00-0.25 (with noise 20 dB
#: down), noise 0.32-0.58
STEADY_DB = 1.0
#: a steady sound whose peak stands this far out (dB) is a tone: tones 41-65, noise 0.5-1.4
PEAK_DB = 10.0
#: below this pitch (dB: the 90th percentile over the sounding 93 ms frames of the height of a
#: frame's most prominent loud bin over the median of the PEAK_SPAN bins each side) nothing in the sound has a pitch:
#: clicks 0.0-4.1 (WAV and MP3), music 12.9 at the least (218 GTZAN clips, 227 Debian game pieces,
#: 63 artist-tagged files; then 14.7). Noise that swells and fades, and crackle, measure 11.3-11.6
#: and are not caught: too near music
PITCH_DB = 8.0
#: from this purity a sound is pure tones: sweeps, stepped tones and DTMF-like pairs 0.9998 and
#: more, music 0.971 at the most (an impurity 3 % against 0.02 %)
PURE = 0.997

STEADY_TONE, STEADY_NOISE, PURE_TONES = "a steady tone", "steady noise", "a sweep or a sequence of pure tones"
NO_PITCH = "clicks or ticks with no pitch"


@dataclass(frozen=True)
class Signal:
    """What the check measured on a track's windows.

    ``steadiness_db``: the median, over the octave bands that hold the sound (within
    ``FLOOR_DB`` of the strongest), of the standard deviation in dB of each band's energy
    across the 93 ms moments of all windows. ``peak_db``: how far the mean spectrum's
    strongest bin stands above the median of the ``PEAK_SPAN`` bins each side of it (dB).
    ``purity``: the median, over the short frames that sound (within ``FLOOR_DB`` of the
    loud ones), of the share of a frame's energy in its ``TONE_BINS`` strongest bins.
    ``pitch_db``: the 90th percentile, over the long frames that sound, of how far a frame's
    strongest bin stands above the mean of the ``PEAK_SPAN`` bins each side of it (dB).
    """

    steadiness_db: float
    peak_db: float
    purity: float
    pitch_db: float = float("inf")

    @property
    def kind(self) -> Optional[str]:
        """What the sound is when it is no music (``STEADY_TONE``, ``STEADY_NOISE``,
        ``PURE_TONES``); None when it may be music."""
        if self.steadiness_db < STEADY_DB:
            return STEADY_TONE if self.peak_db >= PEAK_DB else STEADY_NOISE
        if self.purity >= PURE:
            return PURE_TONES
        if self.pitch_db < PITCH_DB:
            return NO_PITCH
        return None


def power_frames(y: np.ndarray, size: int, hop: int) -> np.ndarray:
    """Hann-windowed power spectra of ``y``, shape ``(frames, size // 2 + 1)``; one frame,
    zero-padded, when ``y`` is shorter than ``size``."""
    if len(y) < size:
        y = np.pad(y, (0, size - len(y)))
    frames = np.lib.stride_tricks.sliding_window_view(y, size)[::hop]
    spec = np.fft.rfft(frames * np.hanning(size).astype(y.dtype), axis=1)
    return spec.real ** 2 + spec.imag ** 2


def measure(windows: Sequence[np.ndarray]) -> Signal:
    """The check's three figures for a track's mono windows (float arrays, 16-22 kHz).

    Frames and bands are counted in samples and bins, not hertz: the models' rates (16 and
    22.05 kHz) differ too little to matter to thresholds chosen with the margins above.
    """
    moments, spectra, purity, pitch = [], [], [], []
    for w in windows:
        tilted = np.diff(np.asarray(w, dtype=np.float32))
        power = power_frames(tilted, FRAME, HOP)
        spectra.append(power.sum(axis=0))
        pitch.append(_frame_pitch(power))
        bands = np.add.reduceat(power, BAND_EDGES[:-1], axis=1)
        n = len(bands) // MOMENT_FRAMES * MOMENT_FRAMES
        if n:
            moments.append(bands[:n].reshape(-1, MOMENT_FRAMES, bands.shape[1]).mean(axis=1))
        short = power_frames(tilted, SHORT_FRAME, SHORT_HOP)
        energy = short.sum(axis=1)
        tones = -np.partition(-short, TONE_BINS, axis=1)[:, :TONE_BINS].sum(axis=1)
        purity.append(np.stack([energy, tones / np.maximum(energy, 1e-30)], axis=1))
    return Signal(steadiness_db=_steadiness(moments), peak_db=_peak(np.sum(spectra, axis=0)),
                  purity=_purity(np.concatenate(purity)), pitch_db=_pitch(np.concatenate(pitch)))


def _steadiness(moments: list[np.ndarray]) -> float:
    if sum(len(m) for m in moments) < 2:
        return float("inf")  # nothing to compare: not steady as far as anyone can tell
    bands = np.concatenate(moments).astype(np.float64)
    mean_db = 10 * np.log10(bands.mean(axis=0) + 1e-30)
    held = mean_db >= mean_db.max() - FLOOR_DB
    return float(np.median((10 * np.log10(bands[:, held] + 1e-30)).std(axis=0)))


def _peak(spectrum: np.ndarray) -> float:
    db = 10 * np.log10(spectrum.astype(np.float64) + 1e-30)
    around = np.median(np.lib.stride_tricks.sliding_window_view(np.pad(db, PEAK_SPAN, mode="edge"),
                                                               2 * PEAK_SPAN + 1), axis=1)
    loud = db >= db.max() - FLOOR_DB
    return float((db - around)[loud].max())


def _frame_pitch(power: np.ndarray) -> np.ndarray:
    """Per long frame: its energy and the height of its most prominent loud bin (dB over the
    median of the PEAK_SPAN bins each side, itself among them), as ``(frames, 2)``. Only the
    ``PITCH_BINS`` loudest bins of a frame are looked at: a partial that stands out is loud."""
    db = 10 * np.log10(power.astype(np.float64) + 1e-30)
    loudest = np.argpartition(-db, PITCH_BINS, axis=1)[:, :PITCH_BINS]
    near = np.clip(loudest[:, :, None] + np.arange(-PEAK_SPAN, PEAK_SPAN + 1), 0, db.shape[1] - 1)
    rows = np.arange(len(db))[:, None]
    height = db[rows, loudest] - np.median(db[rows[:, :, None], near], axis=2)
    return np.stack([power.sum(axis=1), height.max(axis=1)], axis=1)


def _pitch(frames: np.ndarray) -> float:
    energy, height = frames[:, 0], frames[:, 1]
    sounding = energy >= np.percentile(energy, 90) * 10 ** (-FLOOR_DB / 10)
    return float(np.percentile(height[sounding], 90))


def _purity(frames: np.ndarray) -> float:
    energy, share = frames[:, 0], frames[:, 1]
    sounding = energy >= np.percentile(energy, 90) * 10 ** (-FLOOR_DB / 10)
    return float(np.median(share[sounding]))


def reason(windows: Sequence[np.ndarray]) -> Optional[str]:
    """Why a track gets no genre when it does not sound like music ("does not sound like music
    (a steady tone)"); None when it may be music."""
    kind = measure(windows).kind if len(windows) else None
    return f"does not sound like music ({kind})" if kind else None
